//! Command-line parsing (lexopt): commands, options and their --help texts.

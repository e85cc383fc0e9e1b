//! `barge pull`: resolve the image, stream each layer into a staging root, check every digest, then move it into place.

//! The TOML subset containers' `registries.conf` files are written in, read into a
//! small tree: tables, arrays of tables (`[[registry]]`, `[[registry.mirror]]`),
//! dotted table names, bare and quoted keys, dotted keys, basic strings with their
//! escapes, literal strings, booleans, integers, arrays (over several lines, trailing
//! comma allowed) and inline tables, comments. Anything else (multi-line strings,
//! floats, dates) is refused with its line number rather than guessed at.

use crate::error::{Error, Result};

/// A TOML value of the subset.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Bool(bool),
    Integer(i64),
    Array(Vec<Value>),
    Table(Table),
}

/// A table: its keys in the order written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table(pub Vec<(String, Value)>);

impl Table {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }
}

impl Value {
    /// What the value is, for messages: `a string`, `a table`.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Bool(_) => "a boolean",
            Value::Integer(_) => "an integer",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

/// Deepest nesting of arrays and inline tables accepted.
const MAX_DEPTH: usize = 32;

/// Parses a whole document.
pub fn parse(text: &str) -> Result<Table> {
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        pos: 0,
        line: 1,
    };
    p.document()
        .map_err(|e| e.context(format_args!("line {}", p.line)))
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
    line: usize,
}

impl Parser<'_> {
    fn document(&mut self) -> Result<Table> {
        let mut root = Table::default();
        let mut current: Vec<String> = Vec::new();
        loop {
            self.skip_blank_lines();
            match self.peek() {
                None => return Ok(root),
                Some(b'[') => current = self.header(&mut root)?,
                Some(_) => {
                    let (path, value) = self.key_value(0)?;
                    let table = walk(&mut root, &current)?;
                    insert(table, &path, value)?;
                    self.end_of_line()?;
                }
            }
        }
    }

    /// `[a.b]` or `[[a.b]]`: makes the table (or appends one to the array) and
    /// returns the path later keys go under.
    fn header(&mut self, root: &mut Table) -> Result<Vec<String>> {
        self.pos += 1;
        let array = self.eat(b'[');
        self.skip_spaces();
        let path = self.key_path()?;
        if !self.eat(b']') || array && !self.eat(b']') {
            return Err(Error::new("expected `]` to close the table header"));
        }
        let (last, parents) = path
            .split_last()
            .ok_or_else(|| Error::new("empty table name"))?;
        let parent = walk_creating(root, parents)?;
        if array {
            match parent.get_mut(last) {
                None => parent.0.push((
                    last.clone(),
                    Value::Array(vec![Value::Table(Table::default())]),
                )),
                Some(Value::Array(items)) if items.iter().all(|v| matches!(v, Value::Table(_))) => {
                    items.push(Value::Table(Table::default()))
                }
                Some(v) => {
                    return Err(Error::new(format!(
                        "[[{}]] names {}, not an array of tables",
                        path.join("."),
                        v.kind()
                    )))
                }
            }
        } else {
            match parent.get_mut(last) {
                None => parent
                    .0
                    .push((last.clone(), Value::Table(Table::default()))),
                Some(Value::Table(_)) => {}
                Some(v) => {
                    return Err(Error::new(format!(
                        "[{}] names {}, not a table",
                        path.join("."),
                        v.kind()
                    )))
                }
            }
        }
        self.end_of_line()?;
        Ok(path)
    }

    /// `key.path = value`.
    fn key_value(&mut self, depth: usize) -> Result<(Vec<String>, Value)> {
        let path = self.key_path()?;
        if !self.eat(b'=') {
            return Err(Error::new(format!(
                "expected `=` after key {:?}",
                path.join(".")
            )));
        }
        self.skip_spaces();
        let value = self.value(depth)?;
        self.skip_spaces();
        Ok((path, value))
    }

    /// One or more keys joined by `.`, spaces around each.
    fn key_path(&mut self) -> Result<Vec<String>> {
        let mut path = vec![self.key()?];
        self.skip_spaces();
        while self.eat(b'.') {
            self.skip_spaces();
            path.push(self.key()?);
            self.skip_spaces();
        }
        Ok(path)
    }

    fn key(&mut self) -> Result<String> {
        match self.peek() {
            Some(b'"') => self.basic_string(),
            Some(b'\'') => self.literal_string(),
            _ => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
                {
                    self.pos += 1;
                }
                if start == self.pos {
                    return Err(self.unexpected("a key"));
                }
                Ok(self.text[start..self.pos].to_string())
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(Error::new("arrays or inline tables nested too deeply"));
        }
        match self.peek() {
            Some(b'"') if self.s[self.pos..].starts_with(b"\"\"\"") => Err(Error::new(
                "multi-line strings (\"\"\") are not supported here",
            )),
            Some(b'\'') if self.s[self.pos..].starts_with(b"'''") => Err(Error::new(
                "multi-line strings (''') are not supported here",
            )),
            Some(b'"') => self.basic_string().map(Value::String),
            Some(b'\'') => self.literal_string().map(Value::String),
            Some(b'[') => self.array(depth),
            Some(b'{') => self.inline_table(depth),
            Some(b't') if self.s[self.pos..].starts_with(b"true") => {
                self.pos += 4;
                Ok(Value::Bool(true))
            }
            Some(b'f') if self.s[self.pos..].starts_with(b"false") => {
                self.pos += 5;
                Ok(Value::Bool(false))
            }
            Some(c) if c.is_ascii_digit() || c == b'-' || c == b'+' => self.integer(),
            _ => Err(self.unexpected("a value")),
        }
    }

    fn integer(&mut self) -> Result<Value> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || b"+-_.:".contains(&c))
        {
            self.pos += 1;
        }
        let word = &self.text[start..self.pos];
        let digits: String = word.chars().filter(|&c| c != '_').collect();
        digits.parse::<i64>().map(Value::Integer).map_err(|_| {
            Error::new(format!(
                "{word:?} is not a decimal integer (floats and dates are not supported here)"
            ))
        })
    }

    fn array(&mut self, depth: usize) -> Result<Value> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_blank_lines();
            if self.eat(b']') {
                return Ok(Value::Array(items));
            }
            items.push(self.value(depth + 1)?);
            self.skip_blank_lines();
            if self.eat(b']') {
                return Ok(Value::Array(items));
            }
            if !self.eat(b',') {
                return Err(self.unexpected("`,` or `]` in an array"));
            }
        }
    }

    fn inline_table(&mut self, depth: usize) -> Result<Value> {
        self.pos += 1;
        let mut table = Table::default();
        self.skip_spaces();
        if self.eat(b'}') {
            return Ok(Value::Table(table));
        }
        loop {
            self.skip_spaces();
            let (path, value) = self.key_value(depth + 1)?;
            insert(&mut table, &path, value)?;
            if self.eat(b'}') {
                return Ok(Value::Table(table));
            }
            if !self.eat(b',') {
                return Err(self.unexpected("`,` or `}` in an inline table"));
            }
        }
    }

    /// `"..."` with `\b \t \n \f \r \" \\ \uXXXX \UXXXXXXXX`.
    fn basic_string(&mut self) -> Result<String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while self
                .peek()
                .is_some_and(|c| c != b'"' && c != b'\\' && c != b'\n')
            {
                self.pos += 1;
            }
            out.push_str(check_raw(&self.text[start..self.pos])?);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    out.push(self.escape()?);
                }
                _ => return Err(Error::new("unterminated string")),
            }
        }
    }

    fn escape(&mut self) -> Result<char> {
        let c = self
            .peek()
            .ok_or_else(|| Error::new("unterminated string"))?;
        self.pos += 1;
        let hex_digits = match c {
            b'b' => return Ok('\u{8}'),
            b't' => return Ok('\t'),
            b'n' => return Ok('\n'),
            b'f' => return Ok('\u{c}'),
            b'r' => return Ok('\r'),
            b'"' => return Ok('"'),
            b'\\' => return Ok('\\'),
            b'u' => 4,
            b'U' => 8,
            _ => {
                return Err(Error::new(format!(
                    "unknown escape \\{} in a string",
                    c as char
                )))
            }
        };
        let hex = self
            .text
            .get(self.pos..self.pos + hex_digits)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| Error::new(format!("\\{} needs {hex_digits} hex digits", c as char)))?;
        self.pos += hex_digits;
        u32::from_str_radix(hex, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| {
                Error::new(format!(
                    "\\{}{hex} is not a Unicode scalar value",
                    c as char
                ))
            })
    }

    /// `'...'`: no escapes.
    fn literal_string(&mut self) -> Result<String> {
        self.pos += 1;
        let start = self.pos;
        while self.peek().is_some_and(|c| c != b'\'' && c != b'\n') {
            self.pos += 1;
        }
        if !self.eat(b'\'') {
            return Err(Error::new("unterminated string"));
        }
        check_raw(&self.text[start..self.pos - 1]).map(str::to_string)
    }

    /// After a key/value pair or a header: spaces, a comment, then the line's end.
    fn end_of_line(&mut self) -> Result<()> {
        self.skip_spaces();
        if self.peek() == Some(b'#') {
            self.skip_comment();
        }
        match self.peek() {
            None => Ok(()),
            Some(b'\n') => {
                self.pos += 1;
                self.line += 1;
                Ok(())
            }
            Some(b'\r') if self.s.get(self.pos + 1) == Some(&b'\n') => {
                self.pos += 2;
                self.line += 1;
                Ok(())
            }
            Some(_) => Err(self.unexpected("the end of the line")),
        }
    }

    /// Spaces, tabs, newlines and comments.
    fn skip_blank_lines(&mut self) {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r') => self.pos += 1,
                Some(b'\n') => {
                    self.pos += 1;
                    self.line += 1;
                }
                Some(b'#') => self.skip_comment(),
                _ => return,
            }
        }
    }

    fn skip_comment(&mut self) {
        while self.peek().is_some_and(|c| c != b'\n') {
            self.pos += 1;
        }
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn unexpected(&self, wanted: &str) -> Error {
        match self.text[self.pos..].chars().next() {
            None => Error::new(format!("expected {wanted}, found the end of the file")),
            Some('\n') => Error::new(format!("expected {wanted}, found the end of the line")),
            Some(c) => Error::new(format!("expected {wanted}, found {c:?}")),
        }
    }
}

/// Raw control characters other than tab are not allowed in strings.
fn check_raw(raw: &str) -> Result<&str> {
    match raw.chars().find(|&c| c.is_control() && c != '\t') {
        Some(c) => Err(Error::new(format!(
            "control character {c:?} in a string (write it as an escape)"
        ))),
        None => Ok(raw),
    }
}

/// The table at `path` under `root`, going into the last table of each array of tables.
fn walk<'t>(root: &'t mut Table, path: &[String]) -> Result<&'t mut Table> {
    let mut t = root;
    for key in path {
        t = match t.get_mut(key) {
            Some(Value::Table(inner)) => inner,
            Some(Value::Array(items)) => match items.last_mut() {
                Some(Value::Table(inner)) => inner,
                _ => return Err(Error::new(format!("{key:?} is an array, not a table"))),
            },
            Some(v) => return Err(Error::new(format!("{key:?} is {}, not a table", v.kind()))),
            None => return Err(Error::new(format!("internal error: no table {key:?}"))),
        };
    }
    Ok(t)
}

/// Like [`walk`], creating the tables that do not exist yet.
fn walk_creating<'t>(root: &'t mut Table, path: &[String]) -> Result<&'t mut Table> {
    let mut t = root;
    for key in path {
        if t.get(key).is_none() {
            t.0.push((key.clone(), Value::Table(Table::default())));
        }
        t = walk(t, std::slice::from_ref(key))?;
    }
    Ok(t)
}

/// Sets `path = value` in `table`; a key set twice is an error.
fn insert(table: &mut Table, path: &[String], value: Value) -> Result<()> {
    let (last, parents) = path.split_last().ok_or_else(|| Error::new("empty key"))?;
    let t = walk_creating(table, parents)?;
    if t.get(last).is_some() {
        return Err(Error::new(format!(
            "key {:?} is defined twice",
            path.join(".")
        )));
    }
    t.0.push((last.clone(), value));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    #[test]
    fn tables_arrays_of_tables_and_nesting() {
        let doc = parse(
            r#"
unqualified-search-registries = ["a.io", 'b.io',]  # trailing comma
[[registry]]
prefix = "docker.io"
location = "docker.io"
  [[registry.mirror]]
  location = "10.0.0.2:5000"
  insecure = true
  [[registry.mirror]]
  location = "m2"
[[registry]]
location = "quay.io"
blocked = false
"#,
        )
        .unwrap();
        assert_eq!(
            doc.get("unqualified-search-registries"),
            Some(&Value::Array(vec![s("a.io"), s("b.io")]))
        );
        let Some(Value::Array(regs)) = doc.get("registry") else {
            panic!("{doc:?}")
        };
        assert_eq!(regs.len(), 2);
        let Value::Table(first) = &regs[0] else {
            panic!()
        };
        let Some(Value::Array(mirrors)) = first.get("mirror") else {
            panic!()
        };
        assert_eq!(mirrors.len(), 2);
        let Value::Table(m0) = &mirrors[0] else {
            panic!()
        };
        assert_eq!(m0.get("insecure"), Some(&Value::Bool(true)));
        let Value::Table(second) = &regs[1] else {
            panic!()
        };
        assert_eq!(second.get("mirror"), None);
        assert_eq!(second.get("blocked"), Some(&Value::Bool(false)));
    }

    #[test]
    fn strings_escapes_keys_and_inline_tables() {
        let doc = parse(
            "[aliases]\n\"a/b\" = \"x\\ty\\u00e9\\U0001F600\\\\\\\"\"\n'lit' = 'C:\\path'\n\
             dotted.key = 1_000\nt = { location = \"m\", insecure = false }\n\
             arr = [\n  # comment\n  \"one\",\n  \"two\" # after\n]\r\n",
        )
        .unwrap();
        let Some(Value::Table(a)) = doc.get("aliases") else {
            panic!()
        };
        assert_eq!(a.get("a/b"), Some(&s("x\ty\u{e9}\u{1F600}\\\"")));
        assert_eq!(a.get("lit"), Some(&s("C:\\path")));
        let Some(Value::Table(d)) = a.get("dotted") else {
            panic!()
        };
        assert_eq!(d.get("key"), Some(&Value::Integer(1000)));
        let Some(Value::Table(t)) = a.get("t") else {
            panic!()
        };
        assert_eq!(t.get("location"), Some(&s("m")));
        assert_eq!(a.get("arr"), Some(&Value::Array(vec![s("one"), s("two")])));
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, what) in [
            ("a = \"x\"\nb = \"unterminated\n", "line 2", "unterminated"),
            ("a = 1\na = 2\n", "line 2", "defined twice"),
            ("[x]\n[[x]]\n", "line 2", "not an array of tables"),
            ("a = \"\"\"\nmulti\"\"\"", "line 1", "multi-line"),
            ("a = 1.5\n", "line 1", "not a decimal integer"),
            ("a = 1979-05-27\n", "line 1", "dates"),
            ("a = \"x\" b\n", "line 1", "end of the line"),
            ("a = \"\\q\"\n", "line 1", "unknown escape"),
            ("a = [1, 2\n", "line 2", "`,` or `]`"),
            ("[a\n", "line 1", "`]`"),
            ("= 1\n", "line 1", "expected a key"),
            ("a = \"\\ud800\"\n", "line 1", "not a Unicode scalar"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with(line), "{text:?}: {e}");
            assert!(e.contains(what), "{text:?}: {e}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let text = format!("a = {}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse(&text).unwrap_err().to_string().contains("too deeply"));
    }

    #[test]
    fn empty_and_comment_only_documents() {
        assert_eq!(parse("").unwrap(), Table::default());
        assert_eq!(
            parse("# only\n\n   # comments\n").unwrap(),
            Table::default()
        );
    }
}

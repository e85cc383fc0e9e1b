//! JSON helpers over tinyjson: typed field access with clear errors, and a writer with a stable key order (digests of what barge writes must not change between runs).
//!
//! Reading: [`parse`] turns bytes into a [`JsonValue`] (refusing absurd nesting, which
//! would otherwise overflow tinyjson's recursive parser), and the getters
//! (`get_str`, `opt_str`, `get_u64`, ...) fetch a field by a dotted path such as
//! `"config.digest"`, failing with `missing field "config.digest"` or
//! `field "config.size" must be ...`. Callers add what the document is with
//! `.context("manifest")`.
//!
//! Writing: [`to_string_sorted`] is the canonical form barge hashes: object keys sorted
//! by their UTF-8 bytes, no whitespace, integral numbers without a fraction, and
//! minimal string escaping: `"` and `\` are escaped, `\n` `\r` `\t` `\b` `\f` use their
//! short forms, other control characters (U+0000..U+001F) are written as `\u00XX`
//! (lowercase hex), and everything else (including `<`, `>`, `&` and non-ASCII) is
//! written as plain UTF-8. (Go's encoding/json would write `<>&` as `\u003c`...; we do
//! not, and need not: only stability matters for our own digests.)

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::fmt::Write as _;

pub use tinyjson::JsonValue;

/// Deepest nesting of arrays/objects accepted by [`parse`]. Real manifests and
/// configs nest less than 10 levels; tinyjson recurses once per level.
pub const MAX_DEPTH: usize = 64;

/// Parses a JSON document; `what` names it in errors ("manifest", "token response").
/// The caller bounds the size.
pub fn parse(bytes: &[u8], what: &str) -> Result<JsonValue> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::new(format!("{what}: invalid JSON: not UTF-8 ({e})")))?;
    check_depth(text, what)?;
    let v = text
        .parse::<JsonValue>()
        .map_err(|e| Error::new(format!("{what}: invalid JSON: {e}")))?;
    if !all_finite(&v) {
        return Err(Error::new(format!(
            "{what}: invalid JSON: a number is too large for a 64-bit float"
        )));
    }
    Ok(v)
}

/// False if a number overflowed to infinity (`1e400`), which could not be written back.
fn all_finite(v: &JsonValue) -> bool {
    match v {
        JsonValue::Number(n) => n.is_finite(),
        JsonValue::Array(items) => items.iter().all(all_finite),
        JsonValue::Object(map) => map.values().all(all_finite),
        _ => true,
    }
}

/// Refuses documents nested deeper than [`MAX_DEPTH`] before the recursive parser sees them.
fn check_depth(text: &str, what: &str) -> Result<()> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Error::new(format!(
                        "{what}: invalid JSON: nested deeper than {MAX_DEPTH} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The value at a dotted path (`"rootfs.diff_ids"`), if every step is an object holding the key.
pub fn get<'a>(v: &'a JsonValue, path: &str) -> Option<&'a JsonValue> {
    path.split('.').try_fold(v, |cur, key| match cur {
        JsonValue::Object(m) => m.get(key),
        _ => None,
    })
}

/// The value at `path`, treating JSON `null` like an absent field.
fn present<'a>(v: &'a JsonValue, path: &str) -> Option<&'a JsonValue> {
    get(v, path).filter(|x| !x.is_null())
}

fn missing(path: &str) -> Error {
    Error::new(format!("missing field \"{path}\""))
}

fn wrong_type(path: &str, expected: &str) -> Error {
    Error::new(format!("field \"{path}\" must be {expected}"))
}

/// A required string field.
pub fn get_str<'a>(v: &'a JsonValue, path: &str) -> Result<&'a str> {
    opt_str(v, path)?.ok_or_else(|| missing(path))
}

/// An optional string field: absent or null → `None`; present with another type → error.
pub fn opt_str<'a>(v: &'a JsonValue, path: &str) -> Result<Option<&'a str>> {
    match present(v, path) {
        None => Ok(None),
        Some(JsonValue::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong_type(path, "a string")),
    }
}

/// A required non-negative integer field (exact up to 2^53).
pub fn get_u64(v: &JsonValue, path: &str) -> Result<u64> {
    opt_u64(v, path)?.ok_or_else(|| missing(path))
}

/// An optional non-negative integer field.
pub fn opt_u64(v: &JsonValue, path: &str) -> Result<Option<u64>> {
    match present(v, path) {
        None => Ok(None),
        Some(JsonValue::Number(n)) => number_to_u64(*n)
            .map(Some)
            .ok_or_else(|| wrong_type(path, "a non-negative integer")),
        Some(_) => Err(wrong_type(path, "a non-negative integer")),
    }
}

/// `n` as u64 if it is a non-negative integer that f64 holds exactly.
fn number_to_u64(n: f64) -> Option<u64> {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    (n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= EXACT).then_some(n as u64)
}

/// An optional boolean field.
pub fn opt_bool(v: &JsonValue, path: &str) -> Result<Option<bool>> {
    match present(v, path) {
        None => Ok(None),
        Some(JsonValue::Boolean(b)) => Ok(Some(*b)),
        Some(_) => Err(wrong_type(path, "true or false")),
    }
}

/// A required array field.
pub fn get_array<'a>(v: &'a JsonValue, path: &str) -> Result<&'a [JsonValue]> {
    opt_array(v, path)?.ok_or_else(|| missing(path))
}

/// An optional array field.
pub fn opt_array<'a>(v: &'a JsonValue, path: &str) -> Result<Option<&'a [JsonValue]>> {
    match present(v, path) {
        None => Ok(None),
        Some(JsonValue::Array(a)) => Ok(Some(a)),
        Some(_) => Err(wrong_type(path, "an array")),
    }
}

/// A required object field.
#[cfg(test)]
pub fn get_object<'a>(v: &'a JsonValue, path: &str) -> Result<&'a HashMap<String, JsonValue>> {
    opt_object(v, path)?.ok_or_else(|| missing(path))
}

/// An optional object field.
pub fn opt_object<'a>(
    v: &'a JsonValue,
    path: &str,
) -> Result<Option<&'a HashMap<String, JsonValue>>> {
    match present(v, path) {
        None => Ok(None),
        Some(JsonValue::Object(m)) => Ok(Some(m)),
        Some(_) => Err(wrong_type(path, "an object")),
    }
}

/// The document itself as an object (`what` names it in the error).
pub fn as_object<'a>(v: &'a JsonValue, what: &str) -> Result<&'a HashMap<String, JsonValue>> {
    match v {
        JsonValue::Object(m) => Ok(m),
        _ => Err(Error::new(format!("{what}: expected a JSON object"))),
    }
}

/// An optional array of strings (e.g. `urls`, `os.features`).
pub fn opt_str_array(v: &JsonValue, path: &str) -> Result<Vec<String>> {
    let Some(items) = opt_array(v, path)? else {
        return Ok(Vec::new());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            JsonValue::String(s) => Ok(s.clone()),
            _ => Err(wrong_type(&format!("{path}[{i}]"), "a string")),
        })
        .collect()
}

/// An optional object of string values (e.g. `annotations`), sorted by key.
pub fn opt_str_map(v: &JsonValue, path: &str) -> Result<Vec<(String, String)>> {
    let Some(map) = opt_object(v, path)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, val) in map {
        match val {
            JsonValue::String(s) => out.push((k.clone(), s.clone())),
            _ => return Err(wrong_type(&format!("{path}.{k}"), "a string")),
        }
    }
    out.sort();
    Ok(out)
}

/// Builds an object from pairs (later duplicates win).
pub fn object<K: Into<String>>(pairs: impl IntoIterator<Item = (K, JsonValue)>) -> JsonValue {
    JsonValue::Object(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// A JSON string value.
pub fn string(s: impl Into<String>) -> JsonValue {
    JsonValue::String(s.into())
}

/// A JSON number from an integer (exact up to 2^53).
pub fn number(n: u64) -> JsonValue {
    JsonValue::Number(n as f64)
}

/// The canonical compact form (see the module comment): sorted keys, no whitespace.
pub fn to_string_sorted(v: &JsonValue) -> String {
    let mut out = String::new();
    write_value(&mut out, v, None, 0);
    out
}

/// A human-friendly form with sorted keys, one member per line, indented by tabs
/// (as Docker writes config.json), ending in a newline.
pub fn to_string_pretty_sorted(v: &JsonValue) -> String {
    let mut out = String::new();
    write_value(&mut out, v, Some("\t"), 0);
    out.push('\n');
    out
}

fn newline(out: &mut String, indent: Option<&str>, level: usize) {
    if let Some(unit) = indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(unit);
        }
    }
}

fn write_value(out: &mut String, v: &JsonValue, indent: Option<&str>, level: usize) {
    match v {
        JsonValue::Null => out.push_str("null"),
        JsonValue::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        JsonValue::Number(n) => write_number(out, *n),
        JsonValue::String(s) => write_string(out, s),
        JsonValue::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, level + 1);
                write_value(out, item, indent, level + 1);
            }
            if !items.is_empty() {
                newline(out, indent, level);
            }
            out.push(']');
        }
        JsonValue::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, level + 1);
                write_string(out, key);
                out.push(':');
                if indent.is_some() {
                    out.push(' ');
                }
                if let Some(val) = map.get(*key) {
                    write_value(out, val, indent, level + 1);
                }
            }
            if !keys.is_empty() {
                newline(out, indent, level);
            }
            out.push('}');
        }
    }
}

/// Integral values print without a fraction (`5`, not `5.0`); others in Rust's
/// shortest round-trip form. Non-finite values cannot come from parsing; they print as null.
fn write_number(out: &mut String, n: f64) {
    if !n.is_finite() {
        out.push_str("null");
    } else if n == 0.0 {
        out.push('0'); // also for -0
    } else {
        let _ = write!(out, "{n}");
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(s: &str) -> JsonValue {
        parse(s.as_bytes(), "test").unwrap()
    }

    #[test]
    fn parse_errors_name_the_document() {
        let e = parse(b"{\"a\":", "manifest").unwrap_err();
        assert!(e.to_string().starts_with("manifest: invalid JSON"), "{e}");
        let e = parse(b"\xff\xfe", "config").unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
        let e = parse(b"", "token response").unwrap_err();
        assert!(e.to_string().starts_with("token response: invalid JSON"));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = "[".repeat(100_000);
        let e = parse(deep.as_bytes(), "manifest").unwrap_err();
        assert!(e.to_string().contains("nested deeper"), "{e}");
        // Brackets inside strings do not count.
        let s = format!("{{\"a\":\"{}\"}}", "[{".repeat(1000));
        assert!(parse(s.as_bytes(), "x").is_ok());
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes(), "x").is_ok());
    }

    #[test]
    fn numbers_beyond_f64_are_refused() {
        // Found by the manifest fuzz target: 1e370 parsed as infinity, then written as null.
        for text in [
            r#"{"a":1e370}"#,
            r#"[[-1e400]]"#,
            r#"{"a":{"b":[1,2e308]}}"#,
        ] {
            let e = parse(text.as_bytes(), "config").unwrap_err();
            assert!(e.to_string().contains("too large"), "{text}: {e}");
        }
        let v = doc(r#"{"a":1.7976931348623157e308,"b":-1e-400}"#);
        assert_eq!(parse(to_string_sorted(&v).as_bytes(), "x").unwrap(), v);
    }

    #[test]
    fn escaped_quote_inside_string_does_not_end_it() {
        let s = r#"{"a":"x\"[[[[","b":[1]}"#;
        let v = doc(s);
        assert_eq!(get_str(&v, "a").unwrap(), "x\"[[[[");
    }

    #[test]
    fn typed_getters() {
        let v = doc(
            r#"{"config":{"digest":"sha256:x","size":1234,"neg":-1,"frac":1.5,"big":1e300},
                "layers":[1,2],"flag":true,"nul":null,"m":{"k":"v"},"urls":["a","b"]}"#,
        );
        assert_eq!(get_str(&v, "config.digest").unwrap(), "sha256:x");
        assert_eq!(get_u64(&v, "config.size").unwrap(), 1234);
        assert_eq!(get_array(&v, "layers").unwrap().len(), 2);
        assert_eq!(opt_bool(&v, "flag").unwrap(), Some(true));
        assert_eq!(opt_str(&v, "nul").unwrap(), None);
        assert_eq!(opt_str(&v, "nope").unwrap(), None);
        assert_eq!(get_object(&v, "m").unwrap().len(), 1);
        assert_eq!(opt_str_array(&v, "urls").unwrap(), vec!["a", "b"]);
        assert_eq!(
            opt_str_map(&v, "m").unwrap(),
            vec![("k".to_string(), "v".to_string())]
        );

        let e = get_str(&v, "config.mediaType").unwrap_err();
        assert_eq!(e.to_string(), "missing field \"config.mediaType\"");
        let e = get_str(&v, "config.size").unwrap_err();
        assert_eq!(e.to_string(), "field \"config.size\" must be a string");
        for bad in ["config.neg", "config.frac", "config.big", "config.digest"] {
            assert!(get_u64(&v, bad).is_err(), "{bad}");
        }
        assert!(get_array(&v, "flag").is_err());
        assert!(get_object(&v, "layers").is_err());
        assert!(opt_str_array(&v, "layers").is_err());
        // A path through a non-object is simply absent.
        assert!(get(&v, "layers.x").is_none());
    }

    #[test]
    fn sorted_writer_is_canonical() {
        let v = doc(
            r#"{ "b": [1, 2.5, -3, 0, 1e3], "a": {"z": null, "y": true, "x": false}, "c": "s" }"#,
        );
        assert_eq!(
            to_string_sorted(&v),
            r#"{"a":{"x":false,"y":true,"z":null},"b":[1,2.5,-3,0,1000],"c":"s"}"#
        );
        // Reparsing and rewriting gives the same bytes.
        let again = doc(&to_string_sorted(&v));
        assert_eq!(to_string_sorted(&again), to_string_sorted(&v));
    }

    #[test]
    fn sorted_writer_numbers() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "0"),
            (42.0, "42"),
            (1234567890123.0, "1234567890123"),
            (9007199254740992.0, "9007199254740992"),
            (0.5, "0.5"),
            (-2.25, "-2.25"),
        ];
        for (n, want) in cases {
            assert_eq!(to_string_sorted(&JsonValue::Number(*n)), *want);
        }
    }

    #[test]
    fn sorted_writer_string_escaping() {
        let s = "q\" b\\ n\n r\r t\t \u{1} \u{1f} <>& é \u{7f}";
        let out = to_string_sorted(&string(s));
        assert_eq!(
            out,
            "\"q\\\" b\\\\ n\\n r\\r t\\t \\u0001 \\u001f <>& é \u{7f}\""
        );
        assert_eq!(doc(&out), string(s));
    }

    #[test]
    fn keys_sort_by_bytes() {
        let v = object([
            ("b", number(1)),
            ("B", number(2)),
            ("a", number(3)),
            ("é", number(4)),
        ]);
        assert_eq!(to_string_sorted(&v), r#"{"B":2,"a":3,"b":1,"é":4}"#);
    }

    #[test]
    fn pretty_writer() {
        let v = doc(r#"{"auths":{"h":{"auth":"x"}},"e":{},"l":[]}"#);
        assert_eq!(
            to_string_pretty_sorted(&v),
            "{\n\t\"auths\": {\n\t\t\"h\": {\n\t\t\t\"auth\": \"x\"\n\t\t}\n\t},\n\t\"e\": {},\n\t\"l\": []\n}\n"
        );
        assert_eq!(doc(&to_string_pretty_sorted(&v)), v);
    }
}

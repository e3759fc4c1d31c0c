//! Python's `html.unescape` (HTML5 rules), which the CLIP text cleaning applies twice.
//!
//! Named references come from the WHATWG list (`htmlize::ENTITIES`, the same 2231 names
//! as Python's `html.entities.html5`), including the legacy names without `;` and the
//! "longest known prefix" rule; numeric references follow Python's tables of invalid
//! code points (`&#128;` → `€` as windows-1252, surrogates and out-of-range → U+FFFD,
//! non-characters and most C0/C1 controls → removed).

use regex::{Captures, Regex};
use std::sync::OnceLock;

fn charref_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\x0C <&#;]{1,32};?)")
            .expect("valid regex")
    })
}

/// The expansion of a named reference such as `amp;` or `amp` (without the `&`).
pub(super) fn entity(name: &str) -> Option<&'static str> {
    let mut key = Vec::with_capacity(name.len() + 1);
    key.push(b'&');
    key.extend_from_slice(name.as_bytes());
    htmlize::ENTITIES
        .get(key.as_slice())
        .map(|v| std::str::from_utf8(v).expect("entity expansions are UTF-8"))
}

/// All named references ending in `;` (name with the `;`, expansion).
pub(super) fn semicolon_entities() -> impl Iterator<Item = (&'static str, &'static str)> {
    htmlize::ENTITIES.entries().filter_map(|(k, v)| {
        let k = std::str::from_utf8(k).ok()?;
        let name = k.strip_prefix('&')?;
        name.ends_with(';').then(|| {
            (
                name,
                std::str::from_utf8(v).expect("entity expansions are UTF-8"),
            )
        })
    })
}

/// Python's `html._invalid_charrefs`: C1 code points read as windows-1252, plus NUL and CR.
fn invalid_charref(num: u32) -> Option<&'static str> {
    Some(match num {
        0x00 => "\u{fffd}",
        0x0d => "\r",
        0x80 => "\u{20ac}",
        0x81 => "\u{81}",
        0x82 => "\u{201a}",
        0x83 => "\u{0192}",
        0x84 => "\u{201e}",
        0x85 => "\u{2026}",
        0x86 => "\u{2020}",
        0x87 => "\u{2021}",
        0x88 => "\u{02c6}",
        0x89 => "\u{2030}",
        0x8a => "\u{0160}",
        0x8b => "\u{2039}",
        0x8c => "\u{0152}",
        0x8d => "\u{8d}",
        0x8e => "\u{017d}",
        0x8f => "\u{8f}",
        0x90 => "\u{90}",
        0x91 => "\u{2018}",
        0x92 => "\u{2019}",
        0x93 => "\u{201c}",
        0x94 => "\u{201d}",
        0x95 => "\u{2022}",
        0x96 => "\u{2013}",
        0x97 => "\u{2014}",
        0x98 => "\u{02dc}",
        0x99 => "\u{2122}",
        0x9a => "\u{0161}",
        0x9b => "\u{203a}",
        0x9c => "\u{0153}",
        0x9d => "\u{9d}",
        0x9e => "\u{017e}",
        0x9f => "\u{0178}",
        _ => return None,
    })
}

/// Python's `html._invalid_codepoints` (replaced by nothing).
fn invalid_codepoint(num: u32) -> bool {
    matches!(num, 0x1..=0x8 | 0xb | 0xe..=0x1f | 0x7f..=0x9f | 0xfdd0..=0xfdef)
        || (num & 0xfffe == 0xfffe && num <= 0x10ffff)
}

/// Parse digits, saturating far above U+10FFFF (Python ints do not overflow).
fn parse_num(digits: &str, radix: u32) -> u32 {
    let mut v: u64 = 0;
    for c in digits.chars() {
        v = v * radix as u64 + c.to_digit(radix).unwrap_or(0) as u64;
        if v > 0x7fff_ffff {
            return u32::MAX;
        }
    }
    v as u32
}

fn replace_charref(s: &str) -> String {
    if let Some(num) = s.strip_prefix('#') {
        let num = num.trim_end_matches(';');
        let n = match num.strip_prefix(['x', 'X']) {
            Some(hex) => parse_num(hex, 16),
            None => parse_num(num, 10),
        };
        if let Some(r) = invalid_charref(n) {
            return r.to_string();
        }
        if (0xd800..=0xdfff).contains(&n) || n > 0x10ffff {
            return "\u{fffd}".to_string();
        }
        if invalid_codepoint(n) {
            return String::new();
        }
        return char::from_u32(n).map(String::from).unwrap_or_default();
    }
    if let Some(v) = entity(s) {
        return v.to_string();
    }
    // the longest prefix (of at least 2 characters, shorter than s) that is a name
    let bounds: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
    for x in (2..bounds.len()).rev() {
        let (head, tail) = s.split_at(bounds[x]);
        if let Some(v) = entity(head) {
            return format!("{v}{tail}");
        }
    }
    format!("&{s}")
}

/// Python's `html.unescape(s)`.
pub fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    charref_re()
        .replace_all(s, |c: &Captures| replace_charref(&c[1]))
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_semantics() {
        assert_eq!(htmlize::ENTITIES.len(), 2231);
        assert_eq!(
            unescape("&amp; &lt;html&gt; &quot;q&quot; &#39;a&#39;"),
            "& <html> \"q\" 'a'"
        );
        assert_eq!(unescape("&amp;amp;"), "&amp;");
        // legacy names without ';' and the longest-prefix rule
        assert_eq!(unescape("&copy2024 &ampx &notit;"), "©2024 &x ¬it;");
        assert_eq!(unescape("&unknown; & &;"), "&unknown; & &;");
        // numeric: windows-1252 for C1, U+FFFD for surrogates / out of range, removal of
        // non-characters and controls
        assert_eq!(unescape("&#128;&#x93;&#150;"), "€“–");
        assert_eq!(
            unescape("&#xD800;&#99999999999999999999;&#0;"),
            "\u{fffd}\u{fffd}\u{fffd}"
        );
        assert_eq!(unescape("a&#1;b&#xFFFF;c&#x1FFFE;d&#13;"), "abcd\r");
        assert_eq!(unescape("&#65&#x42;&#X43"), "ABC");
        assert_eq!(unescape("&#x1F600;"), "😀");
        assert_eq!(unescape("no entities"), "no entities");
    }
}

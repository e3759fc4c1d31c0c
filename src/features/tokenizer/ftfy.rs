//! A Rust port of `ftfy.fix_text` with its default configuration (ftfy 6.3.1, Copyright 2023
//! Robyn Speer, Apache License 2.0), as used by the CLIP tokenizer's `basic_clean`.
//!
//! Ported: the per-line segmentation and the `unescape_html="auto"` rule; ftfy's own HTML
//! entity unescaping (semicolon entities plus upper-case variants, numeric references);
//! `fix_encoding` (the mojibake heuristic `is_bad`, re-encoding in latin-1, sloppy
//! windows-1250/1/2/3/4/7, iso-8859-2, macroman, cp437 and decoding as UTF-8 or ftfy's
//! "utf-8-variants" (CESU-8 surrogate pairs, `C0 80` = NUL), `restore_byte_a0`,
//! `replace_lossy_sequences`, `decode_inconsistent_utf8`, the latin-1 → windows-1252 and C1
//! fallbacks); `fix_c1_controls`, `fix_latin_ligatures`, `fix_character_width`,
//! `uncurl_quotes`, `fix_line_breaks`, `remove_terminal_escapes`, `remove_control_chars` and
//! NFC normalisation, repeated until nothing changes.
//!
//! Not reproduced: `fix_surrogates` (a Rust `&str` cannot hold lone surrogates, so there is
//! nothing to fix), and differences between Unicode versions (Python 3.11's `unicodedata`
//! is Unicode 14; the Rust crates are newer) for NFC/NFKC and `\s`/`\w` classes of
//! characters assigned after Unicode 14. Python's `re` `\s`/`\w` inside the heuristic are
//! approximated by `[\s\x1c-\x1f]` and `[\p{L}\p{N}_]` (equal for assigned characters except
//! a few numeric Lo/Mn corner cases).

use super::ftfy_tables::{
    BADNESS, CHARMAPS, UTF8_CONTINUATION_STRICT, UTF8_DETECTOR, WINDOWS_1252,
};
use super::html;
use regex::bytes::Regex as BytesRegex;
use regex::{Captures, Regex};
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use unicode_normalization::UnicodeNormalization;

/// ftfy's `max_decode_length` (characters per segment).
const MAX_DECODE_LENGTH: usize = 1_000_000;

struct Charmap {
    name: &'static str,
    /// byte → char
    decode: [char; 256],
    /// char → byte
    encode: HashMap<char, u8>,
    /// characters allowed by `possible_encoding` beyond ASCII
    extra: HashSet<char>,
}

struct Tables {
    badness: Regex,
    utf8_detector: Regex,
    utf8_cont_strict: Regex,
    altered_utf8: BytesRegex,
    lossy_utf8: BytesRegex,
    ansi: Regex,
    html_entity: Regex,
    html_entities: HashMap<String, String>,
    charmaps: Vec<Charmap>,
    width: HashMap<char, String>,
}

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let re = |p: &str| Regex::new(p).expect("valid ftfy regex");
        let bre = |p: &str| BytesRegex::new(p).expect("valid ftfy bytes regex");
        let charmaps = CHARMAPS
            .iter()
            .map(|(name, table)| {
                let decode: [char; 256] =
                    std::array::from_fn(|b| char::from_u32(table[b]).expect("valid table"));
                let encode = decode
                    .iter()
                    .enumerate()
                    .map(|(b, &c)| (c, b as u8))
                    .collect();
                let extra = (0x80..0x100)
                    .chain([0x1a])
                    .map(|b| decode[b])
                    .collect();
                Charmap {
                    name,
                    decode,
                    encode,
                    extra,
                }
            })
            .collect();
        // ftfy's HTML_ENTITIES: "&name;" entities plus, for all-lowercase names whose
        // upper-case spelling html.unescape leaves alone, "&NAME;" → upper-cased expansion
        let mut html_entities = HashMap::new();
        for (name, value) in html::semicolon_entities() {
            html_entities.insert(format!("&{name}"), value.to_string());
            if name == name.to_lowercase() {
                let upper = format!("&{}", name.to_uppercase());
                if html::unescape(&upper) == upper {
                    html_entities.insert(upper, value.to_uppercase());
                }
            }
        }
        let mut width = HashMap::new();
        width.insert('\u{3000}', " ".to_string());
        for cp in 0xff01..0xfff0u32 {
            if let Some(c) = char::from_u32(cp) {
                let alt: String = c.to_string().nfkc().collect();
                if alt != c.to_string() {
                    width.insert(c, alt);
                }
            }
        }
        Tables {
            badness: re(BADNESS),
            utf8_detector: re(UTF8_DETECTOR),
            utf8_cont_strict: re(&format!("^{UTF8_CONTINUATION_STRICT}$")),
            altered_utf8: bre(
                r"(?-u)[\xc2\xc3\xc5\xce\xd0\xd9][ ]|[\xe2\xe3][ ][\x80-\x84\x86-\x9f\xa1-\xbf]|[\xe0-\xe3][\x80-\x84\x86-\x9f\xa1-\xbf][ ]|[\xf0][ ][\x80-\xbf][\x80-\xbf]|[\xf0][\x80-\xbf][ ][\x80-\xbf]|[\xf0][\x80-\xbf][\x80-\xbf][ ]",
            ),
            lossy_utf8: bre(
                r"(?-u)[\xc2-\xdf][\x1a]|[\xc2-\xc3][?]|\xed[\xa0-\xaf][\x1a?]\xed[\xb0-\xbf][\x1a?\x80-\xbf]|\xed[\xa0-\xaf][\x1a?\x80-\xbf]\xed[\xb0-\xbf][\x1a?]|[\xe0-\xef][\x1a?][\x1a\x80-\xbf]|[\xe0-\xef][\x1a\x80-\xbf][\x1a?]|[\xf0-\xf4][\x1a?][\x1a\x80-\xbf][\x1a\x80-\xbf]|[\xf0-\xf4][\x1a\x80-\xbf][\x1a?][\x1a\x80-\xbf]|[\xf0-\xf4][\x1a\x80-\xbf][\x1a\x80-\xbf][\x1a?]|\x1a",
            ),
            ansi: re(r"\x1b\[((?:\d|;)*)([a-zA-Z])"),
            html_entity: re(r"&#?[0-9A-Za-z]{1,24};"),
            html_entities,
            charmaps,
            width,
        }
    })
}

/// `ftfy.fix_text(text)` with the default configuration.
pub fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        // segments are limited to MAX_DECODE_LENGTH characters
        if let Some((i, _)) = rest[..end].char_indices().nth(MAX_DECODE_LENGTH) {
            end = i;
        }
        let segment = &rest[..end];
        if unescape && segment.contains('<') {
            unescape = false;
        }
        out.push_str(&fix_segment(segment, unescape));
        rest = &rest[end..];
    }
    out
}

/// `fix_and_explain` without the explanation.
fn fix_segment(text: &str, unescape: bool) -> String {
    let mut text = text.to_string();
    loop {
        let orig = text.clone();
        if unescape {
            text = unescape_html(&text);
        }
        text = fix_encoding(&text);
        text = fix_c1_controls(&text);
        text = fix_latin_ligatures(&text);
        text = fix_character_width(&text);
        text = uncurl_quotes(&text);
        text = fix_line_breaks(&text);
        text = tables().ansi.replace_all(&text, "").into_owned();
        text = remove_control_chars(&text);
        text = text.nfc().collect();
        if text == orig {
            return text;
        }
    }
}

/// ftfy's `unescape_html`.
pub fn unescape_html(text: &str) -> String {
    let t = tables();
    t.html_entity
        .replace_all(text, |c: &Captures| {
            let m = &c[0];
            if let Some(v) = t.html_entities.get(m) {
                v.clone()
            } else if m.starts_with("&#") {
                let u = html::unescape(m);
                if u.contains(';') { m.to_string() } else { u }
            } else {
                m.to_string()
            }
        })
        .into_owned()
}

/// `badness.is_bad`: does the text look like it contains mojibake?
pub fn is_bad(text: &str) -> bool {
    tables().badness.is_match(text)
}

/// `ftfy.fix_encoding`.
pub fn fix_encoding(text: &str) -> String {
    let mut text = text.to_string();
    loop {
        let fixed = fix_encoding_one_step(&text);
        if fixed == text {
            return text;
        }
        text = fixed;
    }
}

fn possible_encoding(text: &str, cm: &Charmap) -> bool {
    text.chars()
        .all(|c| (c <= '\u{7f}' && c != '\u{1a}') || cm.extra.contains(&c))
}

fn fix_encoding_one_step(text: &str) -> String {
    if text.is_empty() || text.is_ascii() || !is_bad(text) {
        return text.to_string();
    }
    let t = tables();
    let mut latin1_possible = false;
    for cm in &t.charmaps {
        if !possible_encoding(text, cm) {
            continue;
        }
        if cm.name == "latin-1" {
            latin1_possible = true;
        }
        let Some(mut bytes) = text
            .chars()
            .map(|c| cm.encode.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
        else {
            continue;
        };
        if cm.name != "macroman" && t.altered_utf8.is_match(&bytes) {
            bytes = restore_byte_a0(&bytes);
        }
        if cm.name.starts_with("sloppy") {
            bytes = t
                .lossy_utf8
                .replace_all(&bytes, "\u{fffd}".as_bytes())
                .into_owned();
        }
        let decoded = if bytes.contains(&0xed) || bytes.contains(&0xc0) {
            decode_utf8_variants(&bytes)
        } else {
            String::from_utf8(bytes).ok()
        };
        if let Some(fixed) = decoded {
            return fixed;
        }
    }
    if find_utf8_detector(text, 0).is_some() {
        let fixed = decode_inconsistent_utf8(text);
        if fixed != text {
            return fixed;
        }
    }
    if latin1_possible {
        // ftfy checks for "windows-1252" in its list of sloppy names, which never matches,
        // so latin-1 text is always re-read as strict windows-1252 here
        let fixed: Option<String> = text
            .chars()
            .map(|c| {
                let b = c as u32;
                if b > 0xff {
                    return None;
                }
                let v = WINDOWS_1252[b as usize];
                if v == 0 && b != 0 {
                    None
                } else {
                    char::from_u32(v)
                }
            })
            .collect();
        if let Some(fixed) = fixed
            && fixed != text
        {
            return fixed;
        }
    }
    if text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)) {
        return fix_c1_controls(text);
    }
    text.to_string()
}

/// `fixes.restore_byte_a0`.
fn restore_byte_a0(bytes: &[u8]) -> Vec<u8> {
    // A_GRAVE_WORD_RE: b"\xc3 (?! |quele|quela|quilo|s )" → b"\xc3\xa0 "
    let mut out = Vec::with_capacity(bytes.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == 0xc3 && bytes.get(i + 1) == Some(&b' ') {
            let ahead = &bytes[i + 2..];
            let blocked = [&b" "[..], b"quele", b"quela", b"quilo", b"s "]
                .iter()
                .any(|p| ahead.starts_with(p));
            if !blocked {
                out.extend_from_slice(b"\xc3\xa0 ");
                i += 2;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    tables()
        .altered_utf8
        .replace_all(&out, |c: &regex::bytes::Captures| {
            c[0].iter()
                .map(|&b| if b == b' ' { 0xa0 } else { b })
                .collect::<Vec<u8>>()
        })
        .into_owned()
}

/// ftfy's "utf-8-variants" decoder (strict): UTF-8, plus CESU-8 surrogate pairs and the
/// Java-style `C0 80` for NUL. `None` where Python raises `UnicodeDecodeError`.
fn decode_utf8_variants(b: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == 0xc0 && b.get(i + 1) == Some(&0x80) {
            out.push('\0');
            i += 2;
            continue;
        }
        if b[i] == 0xed
            && i + 6 <= b.len()
            && (0xa0..=0xaf).contains(&b[i + 1])
            && (0x80..=0xbf).contains(&b[i + 2])
            && b[i + 3] == 0xed
            && (0xb0..=0xbf).contains(&b[i + 4])
            && (0x80..=0xbf).contains(&b[i + 5])
        {
            let cp = (((b[i + 1] & 0x0f) as u32) << 16)
                + (((b[i + 2] & 0x3f) as u32) << 10)
                + (((b[i + 4] & 0x0f) as u32) << 6)
                + (b[i + 5] & 0x3f) as u32
                + 0x10000;
            out.push(char::from_u32(cp)?);
            i += 6;
            continue;
        }
        // one strictly valid UTF-8 sequence
        let len = match b[i] {
            0x00..=0x7f => 1,
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return None,
        };
        let s = std::str::from_utf8(b.get(i..i + len)?).ok()?;
        out.push_str(s);
        i += len;
    }
    Some(out)
}

/// Leftmost match of `UTF8_DETECTOR_RE` at or after byte `from`: the regex body plus the
/// look-behind `(?<![utf8_continuation_strict])`, retried one character later when the
/// look-behind fails (as a backtracking engine would).
fn find_utf8_detector(text: &str, from: usize) -> Option<(usize, usize)> {
    let t = tables();
    let mut start = from;
    while start <= text.len() {
        let m = t.utf8_detector.find_at(text, start)?;
        let prev = text[..m.start()].chars().next_back();
        let blocked = prev.is_some_and(|c| {
            let mut buf = [0u8; 4];
            t.utf8_cont_strict.is_match(c.encode_utf8(&mut buf))
        });
        if !blocked {
            return Some((m.start(), m.end()));
        }
        start = m.start() + text[m.start()..].chars().next().map_or(1, char::len_utf8);
    }
    None
}

/// `fixes.decode_inconsistent_utf8`.
fn decode_inconsistent_utf8(text: &str) -> String {
    let total = text.chars().count();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some((s, e)) = find_utf8_detector(text, pos) {
        out.push_str(&text[pos..s]);
        let sub = &text[s..e];
        if sub.chars().count() < total && is_bad(sub) {
            out.push_str(&fix_encoding(sub));
        } else {
            out.push_str(sub);
        }
        pos = e;
    }
    out.push_str(&text[pos..]);
    out
}

/// `fixes.fix_c1_controls`: C1 controls read as sloppy windows-1252.
pub fn fix_c1_controls(text: &str) -> String {
    if !text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)) {
        return text.to_string();
    }
    let cm = tables()
        .charmaps
        .iter()
        .find(|c| c.name == "sloppy-windows-1252")
        .expect("table present");
    text.chars()
        .map(|c| {
            if ('\u{80}'..='\u{9f}').contains(&c) {
                cm.decode[c as usize]
            } else {
                c
            }
        })
        .collect()
}

fn fix_latin_ligatures(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            'Ĳ' => out.push_str("IJ"),
            'ĳ' => out.push_str("ij"),
            'ŉ' => out.push_str("ʼn"),
            'Ǳ' => out.push_str("DZ"),
            'ǲ' => out.push_str("Dz"),
            'ǳ' => out.push_str("dz"),
            'Ǆ' => out.push_str("DŽ"),
            'ǅ' => out.push_str("Dž"),
            'ǆ' => out.push_str("dž"),
            'Ǉ' => out.push_str("LJ"),
            'ǈ' => out.push_str("Lj"),
            'ǉ' => out.push_str("lj"),
            'Ǌ' => out.push_str("NJ"),
            'ǋ' => out.push_str("Nj"),
            'ǌ' => out.push_str("nj"),
            'ﬀ' => out.push_str("ff"),
            'ﬁ' => out.push_str("fi"),
            'ﬂ' => out.push_str("fl"),
            'ﬃ' => out.push_str("ffi"),
            'ﬄ' => out.push_str("ffl"),
            'ﬅ' => out.push_str("ſt"),
            'ﬆ' => out.push_str("st"),
            c => out.push(c),
        }
    }
    out
}

fn fix_character_width(text: &str) -> String {
    let w = &tables().width;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match w.get(&c) {
            Some(s) => out.push_str(s),
            None => out.push(c),
        }
    }
    out
}

fn uncurl_quotes(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
            '\u{201c}'..='\u{201f}' => '"',
            c => c,
        })
        .collect()
}

fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

fn remove_control_chars(text: &str) -> String {
    text.chars()
        .filter(|&c| {
            !matches!(c as u32,
                0x00..=0x08 | 0x0b | 0x0e..=0x1f | 0x7f | 0x206a..=0x206f | 0xfeff | 0xfff9..=0xfffc)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_compile() {
        let t = tables();
        assert_eq!(t.charmaps.len(), 10);
        assert_eq!(t.charmaps[0].name, "latin-1");
        assert!(t.html_entities.len() > 2000);
        assert_eq!(
            t.html_entities.get("&EACUTE;").map(String::as_str),
            Some("É")
        );
        // "&LTIMES;" would be read by html.unescape as "&LT" + "IMES;", so no upper variant
        assert!(!t.html_entities.contains_key("&LTIMES;"));
    }

    #[test]
    fn mojibake_and_friends() {
        assert_eq!(fix_text("CafÃ© schÃ¶n"), "Café schön");
        assert_eq!(
            fix_text("The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows."),
            "The Mona Lisa doesn't have eyebrows."
        );
        assert_eq!(
            fix_text("ﬁne ＦＵＬＬＷＩＤＴＨ “q” ‘s’"),
            "fine FULLWIDTH \"q\" 's'"
        );
        assert_eq!(fix_text("e\u{301}"), "é");
        assert_eq!(fix_text("a\u{1b}[31mred\u{1b}[0m\u{7}b"), "aredb");
        assert_eq!(fix_text("x\u{85}y"), "x…y");
        // fix_text repeats until nothing changes: two levels of escaping are undone
        assert_eq!(fix_text("&amp;lt; &EACUTE;"), "< É");
        assert_eq!(fix_text("<b>&amp;</b>"), "<b>&amp;</b>");
        assert_eq!(fix_text("plain ascii"), "plain ascii");
    }

    #[test]
    fn utf8_variants() {
        assert_eq!(decode_utf8_variants(b"a\xc0\x80b").as_deref(), Some("a\0b"));
        assert_eq!(
            decode_utf8_variants(b"\xed\xa0\xbd\xed\xb8\x80").as_deref(),
            Some("😀")
        );
        assert_eq!(decode_utf8_variants(b"\xed\xa0\xbd"), None);
        assert_eq!(decode_utf8_variants(b"\xe2\x82"), None);
    }
}

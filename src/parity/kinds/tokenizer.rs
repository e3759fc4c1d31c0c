//! `clip_tokenizer`: open_clip's `SimpleTokenizer` ids for the strings of the case.

use crate::features::tokenizer::ClipTokenizer;
use crate::parity::common::{Case, Checker, Outcome, as_i64};
use anyhow::{Result, anyhow, bail};

pub fn run(case: &Case, chk: &mut Checker) -> Result<Outcome> {
    let inputs = case.inputs()?;
    let g = case.outputs()?;
    // the strings, as UTF-8 bytes split by offsets (the JSON copy is cross-checked)
    let bytes: Vec<u8> = as_i64(
        inputs
            .get("strings_utf8")
            .ok_or_else(|| anyhow!("input strings_utf8 missing"))?,
    )?
    .into_iter()
    .map(|b| b as u8)
    .collect();
    let offs = as_i64(
        inputs
            .get("strings_utf8_offsets")
            .ok_or_else(|| anyhow!("input strings_utf8_offsets missing"))?,
    )?;
    let strings: Vec<String> = offs
        .windows(2)
        .map(|w| String::from_utf8(bytes[w[0] as usize..w[1] as usize].to_vec()))
        .collect::<std::result::Result<_, _>>()?;
    let meta = case.json["strings"].as_array();
    if let Some(meta) = meta
        && meta.len() != strings.len()
    {
        bail!(
            "{} strings in case.json, {} in inputs",
            meta.len(),
            strings.len()
        );
    }
    let want = g
        .get("token_ids")
        .ok_or_else(|| anyhow!("golden token_ids missing"))?;
    let (n, ctx) = want.dims2()?;
    if n != strings.len() {
        bail!("token_ids has {n} rows for {} strings", strings.len());
    }
    let tok = ClipTokenizer::shared();
    if ctx != tok.context_length() {
        bail!("golden context length {ctx} != {}", tok.context_length());
    }
    let want = as_i64(want)?;
    let mut got = Vec::with_capacity(n * ctx);
    for (i, s) in strings.iter().enumerate() {
        if let Some(m) = meta.and_then(|m| m[i]["text"].as_str())
            && m != s
        {
            chk.fail(format!("string {i}: JSON text and UTF-8 input differ"));
        }
        let ids: Vec<i64> = tok.tokenize(s).into_iter().map(i64::from).collect();
        if ids[..] != want[i * ctx..(i + 1) * ctx] {
            let cleaned = ClipTokenizer::clean(s);
            let golden_clean = meta.and_then(|m| m[i]["cleaned"].as_str()).unwrap_or("?");
            chk.notes.push(format!(
                "string {i} {s:?}: cleaned {cleaned:?} (golden {golden_clean:?})"
            ));
        }
        // the cleaned text is recorded too
        if let Some(c) = meta.and_then(|m| m[i]["cleaned"].as_str())
            && ClipTokenizer::clean(s) != c
        {
            chk.fail(format!(
                "string {i}: cleaned {:?} != golden {c:?}",
                ClipTokenizer::clean(s)
            ));
        }
        got.extend(ids);
    }
    chk.exact("token_ids", &got, &want);
    Ok(Outcome::Ran)
}

//! Reading Outlook's `winmail.dat` (TNEF, `application/ms-tnef`).
//!
//! Some Outlook/Exchange set-ups send a customer's mail as a TNEF stream
//! that holds the body and the attachments; without reading it, the answer
//! ("accept") and a support request's screenshots would be lost. No
//! well-kept Rust crate reads it (the `tnef` crate handles attachments
//! only and has had no release since 2019; `ytnef` binds a C library), so
//! this is a small decoder written from Microsoft's published formats:
//! [MS-OXTNEF] for the stream, [MS-OXCDATA] for the MAPI property values,
//! and [MS-OXRTFCP] for the compressed RTF body.
//!
//! It is pure and defensive: every length is checked against what is left,
//! output is bounded ([`MAX_OUTPUT_BYTES`]), and any malformed input gives a
//! [`TnefError`], never a panic (the fuzz target `tnef_decoder` checks it).
//! What it gives back: the plain-text body (`PR_BODY`, else `attBody`, else
//! the compressed RTF body turned into text) and the attachments with their
//! long file names.

/// Errors reading a TNEF stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TnefError {
    /// The stream does not start with the TNEF signature.
    #[error("not a TNEF stream (signature {0:#010x})")]
    Signature(u32),
    /// A record or value claims more bytes than the stream has left.
    #[error("TNEF stream truncated at byte {0}")]
    Truncated(usize),
    /// The decoded content would exceed [`MAX_OUTPUT_BYTES`].
    #[error("TNEF content larger than {MAX_OUTPUT_BYTES} bytes")]
    TooLarge,
    /// The compressed RTF body is malformed.
    #[error("compressed RTF body: {0}")]
    Rtf(&'static str),
}

/// At most this many bytes come out of one stream (body and attachments
/// together), whatever its records claim.
pub const MAX_OUTPUT_BYTES: usize = 32 << 20;
/// At most this many attachments are read.
pub const MAX_ATTACHMENTS: usize = 256;

const SIGNATURE: u32 = 0x223E_9F78;
const LVL_MESSAGE: u8 = 1;
const LVL_ATTACHMENT: u8 = 2;

// Attribute ids ([MS-OXTNEF] 2.1.3.3), type in the high word.
const ATT_BODY: u32 = 0x0002_800C;
const ATT_MSG_PROPS: u32 = 0x0006_9003;
const ATT_ATTACH_REND_DATA: u32 = 0x0006_9002;
const ATT_ATTACH_TITLE: u32 = 0x0001_8010;
const ATT_ATTACH_DATA: u32 = 0x0006_800F;
const ATT_ATTACHMENT: u32 = 0x0006_9005;
const ATT_OEM_CODEPAGE: u32 = 0x0006_9007;

// MAPI property ids and types ([MS-OXPROPS], [MS-OXCDATA] 2.11.1).
const PR_BODY: u16 = 0x1000;
const PR_RTF_COMPRESSED: u16 = 0x1009;
const PR_BODY_HTML: u16 = 0x1013;
const PR_ATTACH_DATA_BIN: u16 = 0x3701;
const PR_ATTACH_FILENAME: u16 = 0x3704;
const PR_ATTACH_LONG_FILENAME: u16 = 0x3707;
const PR_ATTACH_MIME_TAG: u16 = 0x370E;

const PT_SHORT: u16 = 0x0002;
const PT_LONG: u16 = 0x0003;
const PT_FLOAT: u16 = 0x0004;
const PT_DOUBLE: u16 = 0x0005;
const PT_CURRENCY: u16 = 0x0006;
const PT_APPTIME: u16 = 0x0007;
const PT_ERROR: u16 = 0x000A;
const PT_BOOLEAN: u16 = 0x000B;
const PT_OBJECT: u16 = 0x000D;
const PT_I8: u16 = 0x0014;
const PT_STRING8: u16 = 0x001E;
const PT_UNICODE: u16 = 0x001F;
const PT_SYSTIME: u16 = 0x0040;
const PT_CLSID: u16 = 0x0048;
const PT_BINARY: u16 = 0x0102;
const MV_FLAG: u16 = 0x1000;

/// What a TNEF stream holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tnef {
    /// The message body as plain text, if it has one.
    pub body_text: Option<String>,
    /// The HTML body (`PR_BODY_HTML`), if it has one.
    pub body_html: Option<String>,
    /// The attached files.
    pub attachments: Vec<TnefAttachment>,
}

/// One file attached inside the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TnefAttachment {
    /// Its long file name, else its 8.3 title, else empty.
    pub name: String,
    /// Its MIME type if the sender's Outlook recorded one.
    pub content_type: Option<String>,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// A bounds-checked cursor.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { data, at: 0 }
    }

    fn left(&self) -> usize {
        self.data.len() - self.at
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], TnefError> {
        if n > self.left() {
            return Err(TnefError::Truncated(self.at));
        }
        let s = &self.data[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, TnefError> {
        Ok(self.bytes(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, TnefError> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, TnefError> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Skips the padding that aligns a variable-length value to 4 bytes.
    fn pad4(&mut self, len: usize) -> Result<(), TnefError> {
        let pad = (4 - len % 4) % 4;
        self.bytes(pad.min(self.left())).map(|_| ())
    }
}

/// Decodes a TNEF stream.
pub fn decode(data: &[u8]) -> Result<Tnef, TnefError> {
    let mut r = Reader::new(data);
    let sig = r.u32()?;
    if sig != SIGNATURE {
        return Err(TnefError::Signature(sig));
    }
    let _key = r.u16()?;
    let mut out = Tnef::default();
    let mut att_body: Option<String> = None;
    let mut rtf: Option<Vec<u8>> = None;
    let mut code_page = 1252u32;
    let mut budget = MAX_OUTPUT_BYTES;
    while r.left() > 0 {
        let level = r.u8()?;
        let id = r.u32()?;
        let len = r.u32()? as usize;
        let value = r.bytes(len)?;
        // The checksum (sum of the value's bytes) is not checked: a wrong
        // one costs nothing here, and some writers get it wrong.
        let _checksum = r.u16()?;
        spend(&mut budget, value.len())?;
        match (level, id) {
            (LVL_MESSAGE, ATT_OEM_CODEPAGE) if value.len() >= 4 => {
                code_page = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
            }
            (LVL_MESSAGE, ATT_BODY) => att_body = Some(string8(value, code_page)),
            (LVL_MESSAGE, ATT_MSG_PROPS) => {
                for (prop, ty, v) in properties(value)? {
                    match prop {
                        PR_BODY => out.body_text = text_value(ty, v, code_page),
                        PR_BODY_HTML => out.body_html = text_value(ty, v, code_page),
                        PR_RTF_COMPRESSED => rtf = Some(v.to_vec()),
                        _ => {}
                    }
                }
            }
            (LVL_ATTACHMENT, ATT_ATTACH_REND_DATA) => {
                if out.attachments.len() >= MAX_ATTACHMENTS {
                    break;
                }
                out.attachments.push(TnefAttachment::default());
            }
            (LVL_ATTACHMENT, ATT_ATTACH_TITLE) => {
                if let Some(a) = current(&mut out.attachments) {
                    if a.name.is_empty() {
                        a.name = string8(value, code_page);
                    }
                }
            }
            (LVL_ATTACHMENT, ATT_ATTACH_DATA) => {
                if let Some(a) = current(&mut out.attachments) {
                    a.data = value.to_vec();
                }
            }
            (LVL_ATTACHMENT, ATT_ATTACHMENT) => {
                let props = properties(value)?;
                if let Some(a) = current(&mut out.attachments) {
                    for (prop, ty, v) in props {
                        match prop {
                            PR_ATTACH_LONG_FILENAME => {
                                if let Some(name) = text_value(ty, v, code_page) {
                                    a.name = name;
                                }
                            }
                            PR_ATTACH_FILENAME if a.name.is_empty() => {
                                a.name = text_value(ty, v, code_page).unwrap_or_default();
                            }
                            PR_ATTACH_MIME_TAG => a.content_type = text_value(ty, v, code_page),
                            PR_ATTACH_DATA_BIN if a.data.is_empty() && ty == PT_BINARY => {
                                a.data = v.to_vec();
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if out.body_text.as_deref().is_none_or(|t| t.trim().is_empty()) {
        out.body_text = att_body.filter(|t| !t.trim().is_empty());
    }
    if out.body_text.is_none() {
        if let Some(compressed) = rtf {
            let raw = decompress_rtf(&compressed, budget)?;
            let text = rtf_to_text(&raw);
            if !text.trim().is_empty() {
                out.body_text = Some(text);
            }
        }
    }
    Ok(out)
}

fn spend(budget: &mut usize, n: usize) -> Result<(), TnefError> {
    *budget = budget.checked_sub(n).ok_or(TnefError::TooLarge)?;
    Ok(())
}

fn current(list: &mut [TnefAttachment]) -> Option<&mut TnefAttachment> {
    list.last_mut()
}

/// A MAPI property: its id, its type and its value's bytes.
type Property<'a> = (u16, u16, &'a [u8]);

/// The properties of an `attMsgProps`/`attAttachment` value: (id, type,
/// value bytes) for each single-valued property; multi-valued ones and
/// named-property names are read past.
fn properties(value: &[u8]) -> Result<Vec<Property<'_>>, TnefError> {
    let mut r = Reader::new(value);
    let count = r.u32()? as usize;
    let mut out = Vec::new();
    for _ in 0..count {
        if r.left() == 0 {
            break;
        }
        let ty = r.u16()?;
        let id = r.u16()?;
        if id >= 0x8000 {
            // A named property: GUID, kind, then a number or a name.
            r.bytes(16)?;
            match r.u32()? {
                0 => {
                    r.u32()?;
                }
                _ => {
                    let n = r.u32()? as usize;
                    r.bytes(n)?;
                    r.pad4(n)?;
                }
            }
        }
        let multi = ty & MV_FLAG != 0;
        let base = ty & !MV_FLAG;
        let values = if multi || is_variable(base) {
            r.u32()? as usize
        } else {
            1
        };
        for k in 0..values {
            let v = match base {
                PT_SHORT | PT_BOOLEAN => {
                    let v = r.bytes(2)?;
                    r.bytes(2)?;
                    v
                }
                PT_LONG | PT_FLOAT | PT_ERROR => r.bytes(4)?,
                PT_DOUBLE | PT_CURRENCY | PT_APPTIME | PT_I8 | PT_SYSTIME => r.bytes(8)?,
                PT_CLSID => r.bytes(16)?,
                PT_STRING8 | PT_UNICODE | PT_BINARY | PT_OBJECT => {
                    let n = r.u32()? as usize;
                    let v = r.bytes(n)?;
                    r.pad4(n)?;
                    v
                }
                // A type this reader does not know: its size is unknown,
                // so the rest of the list cannot be read. Keep what came
                // before.
                _ => return Ok(out),
            };
            if !multi && k == 0 {
                out.push((id, base, v));
            }
        }
    }
    Ok(out)
}

fn is_variable(ty: u16) -> bool {
    matches!(ty, PT_STRING8 | PT_UNICODE | PT_BINARY | PT_OBJECT)
}

/// A string property's text: UTF-16LE for `PT_UNICODE`, the code page's
/// 8-bit text for `PT_STRING8`, and a binary value read as UTF-8 (Outlook
/// stores `PR_BODY_HTML` as binary).
fn text_value(ty: u16, v: &[u8], code_page: u32) -> Option<String> {
    let s = match ty {
        PT_UNICODE => {
            let units: Vec<u16> = v
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        PT_STRING8 => string8(v, code_page),
        PT_BINARY => String::from_utf8_lossy(v).into_owned(),
        _ => return None,
    };
    Some(s.trim_end_matches('\0').to_string())
}

/// An 8-bit string in the stream's code page, NUL-terminated. UTF-8 text
/// (code page 65001, and any text that happens to be valid UTF-8) is read
/// as such; other code pages through mail-parser's decoders (949 is
/// Korean Outlook's, 932 Japanese, 936 and 950 Chinese, 125x Western and
/// Central European), and Windows-1252 when the code page is unknown.
fn string8(v: &[u8], code_page: u32) -> String {
    let v = v.split(|b| *b == 0).next().unwrap_or(&[]);
    if code_page == 65001 || std::str::from_utf8(v).is_ok() {
        return String::from_utf8_lossy(v).into_owned();
    }
    let name = match code_page {
        932 => "shift_jis".to_string(),
        936 => "gbk".to_string(),
        949 => "windows-949".to_string(),
        950 => "big5".to_string(),
        cp => format!("cp{cp}"),
    };
    match mail_parser::decoders::charsets::map::charset_decoder(name.as_bytes()) {
        Some(decode) => decode(v),
        None => v.iter().map(|&b| cp1252(b)).collect(),
    }
}

fn cp1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž',
        '\u{8F}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}',
        'ž', 'Ÿ',
    ];
    match b {
        0x80..=0x9F => HIGH[(b - 0x80) as usize],
        _ => b as char,
    }
}

/// The dictionary's initial text ([MS-OXRTFCP] 2.1.2.1).
const RTF_PREBUF: &[u8] = b"{\\rtf1\\ansi\\mac\\deff0\\deftab720{\\fonttbl;}{\\f0\\fnil \\froman \\fswiss \\fmodern \\fscript \\fdecor MS Sans SerifSymbolArialTimes New RomanCourier{\\colortbl\\red0\\green0\\blue0\r\n\\par \\pard\\plain\\f0\\fs20\\b\\i\\u\\tab\\tx";

const LZFU: u32 = 0x7546_5A4C;
const MELA: u32 = 0x414C_454D;

/// Decompresses `PR_RTF_COMPRESSED`, writing at most `limit` bytes.
pub fn decompress_rtf(data: &[u8], limit: usize) -> Result<Vec<u8>, TnefError> {
    let mut r = Reader::new(data);
    let comp_size = r.u32().map_err(|_| TnefError::Rtf("short header"))? as usize;
    let raw_size = r.u32().map_err(|_| TnefError::Rtf("short header"))? as usize;
    let magic = r.u32().map_err(|_| TnefError::Rtf("short header"))?;
    let _crc = r.u32().map_err(|_| TnefError::Rtf("short header"))?;
    // compSize counts the bytes after itself: the rest of the header and
    // the data.
    let end = comp_size.saturating_add(4).min(data.len());
    let body = data.get(16..end).unwrap_or(&[]);
    let cap = raw_size.min(limit);
    match magic {
        MELA => Ok(body[..body.len().min(cap)].to_vec()),
        LZFU => {
            let mut dict = [0u8; 4096];
            dict[..RTF_PREBUF.len()].copy_from_slice(RTF_PREBUF);
            let mut write = RTF_PREBUF.len();
            let mut out = Vec::with_capacity(cap.min(1 << 20));
            let mut i = 0;
            'outer: while i < body.len() {
                let flags = body[i];
                i += 1;
                for bit in 0..8 {
                    if out.len() >= cap {
                        break 'outer;
                    }
                    if flags & (1 << bit) == 0 {
                        let Some(&b) = body.get(i) else { break 'outer };
                        i += 1;
                        out.push(b);
                        dict[write] = b;
                        write = (write + 1) % 4096;
                    } else {
                        let (Some(&hi), Some(&lo)) = (body.get(i), body.get(i + 1)) else {
                            break 'outer;
                        };
                        i += 2;
                        let word = u16::from_be_bytes([hi, lo]);
                        let offset = (word >> 4) as usize;
                        let len = (word & 0xF) as usize + 2;
                        if offset == write {
                            // The end marker: a reference to the write position.
                            break 'outer;
                        }
                        for k in 0..len {
                            if out.len() >= cap {
                                break 'outer;
                            }
                            let b = dict[(offset + k) % 4096];
                            out.push(b);
                            dict[write] = b;
                            write = (write + 1) % 4096;
                        }
                    }
                }
            }
            Ok(out)
        }
        _ => Err(TnefError::Rtf("unknown compression type")),
    }
}

/// Destinations whose text is no body text.
const SKIPPED_DESTINATIONS: &[&str] = &[
    "fonttbl",
    "colortbl",
    "stylesheet",
    "info",
    "pict",
    "object",
    "header",
    "footer",
    "listtable",
    "listoverridetable",
    "rsidtbl",
    "generator",
    "xmlnstbl",
    "themedata",
    "datastore",
    "latentstyles",
];

/// The text of an RTF body: control words dropped, `\par`/`\line` as line
/// breaks, `\'hh` as Windows-1252, `\uN` as Unicode, and groups such as the
/// font table or `{\*\…}` destinations (where HTML-encapsulating RTF keeps
/// its tags) left out.
pub fn rtf_to_text(rtf: &[u8]) -> String {
    let mut out = String::new();
    // For each open group: whether its text is skipped.
    let mut skip_stack: Vec<bool> = vec![false];
    // After `\uN`, the next this many characters are the ANSI fallback.
    let mut uc = 1usize;
    let mut fallback = 0usize;
    let mut i = 0;
    let skipping = |s: &Vec<bool>| s.last().copied().unwrap_or(false);
    while i < rtf.len() {
        let b = rtf[i];
        match b {
            b'{' => {
                let parent = skipping(&skip_stack);
                if skip_stack.len() < 1024 {
                    skip_stack.push(parent);
                }
                i += 1;
            }
            b'}' => {
                if skip_stack.len() > 1 {
                    skip_stack.pop();
                }
                i += 1;
            }
            b'\\' => {
                i += 1;
                let Some(&c) = rtf.get(i) else { break };
                if c.is_ascii_alphabetic() {
                    let start = i;
                    while i < rtf.len() && rtf[i].is_ascii_alphabetic() && i - start < 32 {
                        i += 1;
                    }
                    let word = std::str::from_utf8(&rtf[start..i]).unwrap_or("");
                    let num_start = i;
                    if i < rtf.len() && rtf[i] == b'-' {
                        i += 1;
                    }
                    while i < rtf.len() && rtf[i].is_ascii_digit() && i - num_start < 10 {
                        i += 1;
                    }
                    let param: Option<i64> = std::str::from_utf8(&rtf[num_start..i])
                        .ok()
                        .and_then(|s| s.parse().ok());
                    if i < rtf.len() && rtf[i] == b' ' {
                        i += 1;
                    }
                    let skip = skipping(&skip_stack);
                    match word {
                        w if SKIPPED_DESTINATIONS.contains(&w) => {
                            if let Some(top) = skip_stack.last_mut() {
                                *top = true;
                            }
                        }
                        "par" | "line" | "sect" | "page" if !skip => out.push('\n'),
                        "tab" if !skip => out.push('\t'),
                        "uc" => uc = param.unwrap_or(1).clamp(0, 8) as usize,
                        "u" if !skip => {
                            let n = param.unwrap_or(0);
                            let n = if n < 0 { n + 65536 } else { n };
                            out.extend(char::from_u32(n as u32));
                            fallback = uc;
                        }
                        _ => {}
                    }
                } else {
                    i += 1;
                    match c {
                        b'*' => {
                            if let Some(top) = skip_stack.last_mut() {
                                *top = true;
                            }
                        }
                        b'\'' => {
                            let hex = rtf.get(i..i + 2).and_then(|h| std::str::from_utf8(h).ok());
                            let value = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                            i += 2.min(rtf.len() - i);
                            if let Some(v) = value {
                                if fallback > 0 {
                                    fallback -= 1;
                                } else if !skipping(&skip_stack) {
                                    out.push(cp1252(v));
                                }
                            }
                        }
                        b'\\' | b'{' | b'}' if !skipping(&skip_stack) => out.push(c as char),
                        b'~' if !skipping(&skip_stack) => out.push('\u{A0}'),
                        b'\n' | b'\r' if !skipping(&skip_stack) => out.push('\n'),
                        _ => {}
                    }
                }
            }
            b'\r' | b'\n' => i += 1,
            _ => {
                if fallback > 0 {
                    fallback -= 1;
                } else if !skipping(&skip_stack) {
                    // Plain RTF text is 7-bit; anything else is read as
                    // Windows-1252 like `\'hh`.
                    out.push(cp1252(b));
                }
                i += 1;
            }
        }
    }
    out
}

/// Writers for TNEF streams, for tests here and in `inbound`.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Writes TNEF records as [MS-OXTNEF] 2.1.3.1 lays them out: level,
    /// attribute id, length, value, checksum.
    pub fn record(out: &mut Vec<u8>, level: u8, id: u32, value: &[u8]) {
        out.push(level);
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
        let sum = value
            .iter()
            .fold(0u16, |s, b| s.wrapping_add(u16::from(*b)));
        out.extend_from_slice(&sum.to_le_bytes());
    }

    /// A property list ([MS-OXTNEF] 2.1.3.4): count, then for each a
    /// type, an id, a value count (variable types) and the padded value.
    pub fn props(list: &[(u16, u16, &[u8])]) -> Vec<u8> {
        let mut v = (list.len() as u32).to_le_bytes().to_vec();
        for (ty, id, value) in list {
            v.extend_from_slice(&ty.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
            if is_variable(*ty) {
                v.extend_from_slice(&1u32.to_le_bytes());
                v.extend_from_slice(&(value.len() as u32).to_le_bytes());
                v.extend_from_slice(value);
                v.resize(v.len() + (4 - value.len() % 4) % 4, 0);
            } else {
                v.extend_from_slice(value);
            }
        }
        v
    }

    pub fn utf16(s: &str) -> Vec<u8> {
        s.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    }

    /// A stream in code page 1252 with the given records.
    pub fn stream(records: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        stream_with_code_page(1252, records)
    }

    /// A stream: signature, key, version, OEM code page, then `records`.
    pub fn stream_with_code_page(code_page: u32, records: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut v = SIGNATURE.to_le_bytes().to_vec();
        v.extend_from_slice(&0x1234u16.to_le_bytes());
        record(
            &mut v,
            LVL_MESSAGE,
            0x0008_9006,
            &0x0001_0000u32.to_le_bytes(),
        );
        let mut cp = code_page.to_le_bytes().to_vec();
        cp.extend_from_slice(&[0; 4]);
        record(&mut v, LVL_MESSAGE, ATT_OEM_CODEPAGE, &cp);
        records(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn reads_a_unicode_body_and_an_attachment() {
        let data = stream(|v| {
            let body = props(&[
                (PT_LONG, 0x0E07, &[1, 0, 0, 0]),
                (PT_UNICODE, PR_BODY, &utf16("수락합니다\r\n\r\nAlice")),
            ]);
            record(v, LVL_MESSAGE, ATT_MSG_PROPS, &body);
            record(
                v,
                LVL_ATTACHMENT,
                ATT_ATTACH_REND_DATA,
                &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            );
            record(v, LVL_ATTACHMENT, ATT_ATTACH_TITLE, b"SCREEN~1.PNG\0");
            record(v, LVL_ATTACHMENT, ATT_ATTACH_DATA, b"\x89PNG fake");
            let a = props(&[
                (
                    PT_UNICODE,
                    PR_ATTACH_LONG_FILENAME,
                    &utf16("screenshot of the error.png"),
                ),
                (PT_STRING8, PR_ATTACH_MIME_TAG, b"image/png\0"),
            ]);
            record(v, LVL_ATTACHMENT, ATT_ATTACHMENT, &a);
        });
        let t = decode(&data).expect("decodes");
        assert_eq!(t.body_text.as_deref(), Some("수락합니다\r\n\r\nAlice"));
        assert_eq!(t.attachments.len(), 1);
        assert_eq!(t.attachments[0].name, "screenshot of the error.png");
        assert_eq!(t.attachments[0].content_type.as_deref(), Some("image/png"));
        assert_eq!(t.attachments[0].data, b"\x89PNG fake");
    }

    #[test]
    fn att_body_in_korean_outlook_code_page() {
        let data = stream_with_code_page(949, |v| {
            // "수락합니다" in code page 949.
            record(
                v,
                LVL_MESSAGE,
                ATT_BODY,
                b"\xBC\xF6\xB6\xF4\xC7\xD5\xB4\xCF\xB4\xD9\0",
            );
        });
        assert_eq!(
            decode(&data).unwrap().body_text.as_deref(),
            Some("수락합니다")
        );
    }

    #[test]
    fn att_body_in_windows_1252() {
        let data = stream(|v| record(v, LVL_MESSAGE, ATT_BODY, b"Accept \x96 merci\0"));
        assert_eq!(
            decode(&data).unwrap().body_text.as_deref(),
            Some("Accept – merci")
        );
    }

    #[test]
    fn compressed_rtf_body() {
        // An uncompressed ("MELA") and a compressed ("LZFu") body; the
        // compressed one uses a dictionary reference into the initial
        // text for "\par " and ends with the end marker.
        let rtf = b"{\\rtf1\\ansi{\\fonttbl{\\f0 Arial;}}{\\*\\generator x;}\\f0 Decline\\par Thanks \\'e9t\\u233?\\par}";
        let mut mela = Vec::new();
        mela.extend_from_slice(&((rtf.len() + 12) as u32).to_le_bytes());
        mela.extend_from_slice(&(rtf.len() as u32).to_le_bytes());
        mela.extend_from_slice(&MELA.to_le_bytes());
        mela.extend_from_slice(&0u32.to_le_bytes());
        mela.extend_from_slice(rtf);
        let data = stream(|v| {
            record(
                v,
                LVL_MESSAGE,
                ATT_MSG_PROPS,
                &props(&[(PT_BINARY, PR_RTF_COMPRESSED, &mela)]),
            );
        });
        assert_eq!(
            decode(&data).unwrap().body_text.as_deref(),
            Some("Decline\nThanks été\n")
        );

        // LZFu: literals "{\rtf1 ok" then a reference to "\par " in the
        // prebuffer (offset 0xB2 = 178... found below), then the end.
        let par_at = RTF_PREBUF.windows(5).position(|w| w == b"\\par ").unwrap();
        let literal = b"{\\rtf1 ok";
        let mut body = Vec::new();
        let mut out_pos = RTF_PREBUF.len();
        // First control byte: 8 literals.
        body.push(0x00);
        body.extend_from_slice(&literal[..8]);
        out_pos += 8;
        // Second: one literal, a reference (bit 1), the end marker (bit 2).
        body.push(0b0000_0110);
        body.push(literal[8]);
        out_pos += 1;
        body.extend_from_slice(&(((par_at as u16) << 4) | (5 - 2)).to_be_bytes());
        out_pos += 5;
        body.extend_from_slice(&(((out_pos % 4096) as u16) << 4).to_be_bytes());
        let mut lz = Vec::new();
        lz.extend_from_slice(&((body.len() + 12) as u32).to_le_bytes());
        lz.extend_from_slice(&14u32.to_le_bytes());
        lz.extend_from_slice(&LZFU.to_le_bytes());
        lz.extend_from_slice(&0u32.to_le_bytes());
        lz.extend_from_slice(&body);
        assert_eq!(decompress_rtf(&lz, 1 << 20).unwrap(), b"{\\rtf1 ok\\par ");
    }

    #[test]
    fn prebuffer_has_the_specified_length() {
        assert_eq!(RTF_PREBUF.len(), 207);
    }

    #[test]
    fn malformed_streams_are_errors_not_panics() {
        assert!(matches!(decode(b"nope"), Err(TnefError::Signature(_))));
        assert!(decode(&[]).is_err());
        let good = stream(|v| {
            record(
                v,
                LVL_MESSAGE,
                ATT_MSG_PROPS,
                &props(&[(PT_UNICODE, PR_BODY, &utf16("Accept"))]),
            );
            record(v, LVL_ATTACHMENT, ATT_ATTACH_REND_DATA, &[0; 14]);
            record(v, LVL_ATTACHMENT, ATT_ATTACH_DATA, b"data");
        });
        // Every truncation and a deterministic spray of byte flips: an
        // error or a result, never a panic or a hang.
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            let mut m = good.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed as usize) % m.len();
                m[at] = (seed >> 32) as u8;
            }
            let _ = decode(&m);
        }
        let _ = decompress_rtf(&[0xFF; 40], 1 << 20);
        let _ = rtf_to_text(b"{{{{\\u-1\\'zz\\");
    }

    #[test]
    fn claimed_sizes_are_bounded() {
        // A compressed body that claims 4 GB comes out at most `limit`.
        let mut lz = Vec::new();
        lz.extend_from_slice(&100u32.to_le_bytes());
        lz.extend_from_slice(&u32::MAX.to_le_bytes());
        lz.extend_from_slice(&LZFU.to_le_bytes());
        lz.extend_from_slice(&0u32.to_le_bytes());
        // Every control byte all references of length 17 to offset 0.
        let chunk: Vec<u8> = std::iter::once(0xFF)
            .chain([0x00, 0x0F].repeat(8))
            .collect();
        lz.extend(chunk.repeat(30));
        assert!(decompress_rtf(&lz, 1000).unwrap().len() <= 1000);
    }
}

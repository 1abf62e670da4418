//! A pull reader for JSON text that arrives as a byte stream. It exists for one job: reading a
//! backup manifest of a million segments (hundreds of megabytes of JSON) without holding the
//! text, or a full tree of it, in memory. The caller walks the document it expects (object
//! keys, numbers, strings) and skips whatever it does not need at scanning speed; only the
//! current token is ever buffered, so memory is bounded by the largest single string or number
//! plus a fixed read buffer.
//!
//! It is a validating reader for what it consumes (a value that is not well-formed JSON is an
//! error naming the byte position), but skipping trusts bracket structure and string quoting
//! only: `skip_value` does not check, say, that a skipped number is well formed. That is the
//! same latitude the manifest format gives unknown fields.

use std::io::Read;

/// Why the JSON text could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("at byte {at}: {what}")]
    Syntax { at: u64, what: String },
    #[error("read failed at byte {at}: {source}")]
    Io {
        at: u64,
        #[source]
        source: std::io::Error,
    },
}

const CHUNK: usize = 1 << 18;

/// What comes next in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

pub struct JsonPull<R: Read> {
    src: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    /// Bytes dropped from the front of `buf` so far (for error positions).
    dropped: u64,
    /// Per open container: whether the next member/element is the first one.
    first: Vec<bool>,
    /// The names list `next_key_of` matched last, and where: records of one kind repeat
    /// their keys in the same order, so the search starts right after the last match.
    key_hint: (usize, usize),
}

impl<R: Read> JsonPull<R> {
    pub fn new(src: R) -> Self {
        Self {
            src,
            buf: vec![0; CHUNK],
            pos: 0,
            len: 0,
            eof: false,
            dropped: 0,
            first: Vec::new(),
            key_hint: (0, 0),
        }
    }

    fn at(&self) -> u64 {
        self.dropped + self.pos as u64
    }

    /// A parser of a text that `src` yields from byte `base` of a larger document on: the
    /// positions it reports (`offset`, errors) are positions in that document.
    pub fn starting_at(src: R, base: u64) -> Self {
        let mut p = Self::new(src);
        p.dropped = base;
        p
    }

    /// Where the parser is in the document: the byte it reads next.
    pub fn offset(&self) -> u64 {
        self.at()
    }

    /// Moves to the next occurrence of `pattern` (not consumed), dropping the text before it
    /// unread. Returns false, at the end of the input, when there is none. For a caller that
    /// starts reading at a point of the document whose context it does not know, and looks
    /// for a token that can only occur at one kind of place.
    pub fn find(&mut self, pattern: &[u8]) -> Result<bool, PullError> {
        let finder = memchr::memmem::Finder::new(pattern);
        loop {
            if let Some(i) = finder.find(&self.buf[self.pos..self.len]) {
                self.pos += i;
                return Ok(true);
            }
            // Keep a tail that may be the start of an occurrence cut by the refill.
            let keep = (self.len - self.pos).min(pattern.len().saturating_sub(1));
            self.pos = self.len - keep;
            if !self.fill(self.pos)? {
                return Ok(false);
            }
        }
    }

    /// Continues as if an array had just been opened here (`[` consumed), for a caller that
    /// found the start of an array's element with `find`.
    pub fn enter_array(&mut self) {
        self.first.clear();
        self.first.push(true);
    }

    /// Drops the text up to document position `end` unread and closes the innermost array
    /// there. The caller vouches that this text is the rest of that array, `]` included
    /// (another reader of the same document parsed it).
    pub fn leave_array_at(&mut self, end: u64) -> Result<(), PullError> {
        loop {
            if end <= self.dropped + self.len as u64 {
                let to = usize::try_from(end.saturating_sub(self.dropped)).unwrap_or(self.len);
                if to < self.pos {
                    return self.err("an array cannot end before the current position");
                }
                self.pos = to;
                self.first.pop();
                return Ok(());
            }
            self.pos = self.len;
            if !self.fill(self.pos)? {
                return self.err("the text ends before the end of an array");
            }
        }
    }

    fn err<T>(&self, what: impl Into<String>) -> Result<T, PullError> {
        Err(PullError::Syntax {
            at: self.at(),
            what: what.into(),
        })
    }

    /// Reads more bytes, keeping `buf[keep_from..len]` (moved to the front). Returns false
    /// at the end of the input.
    fn fill(&mut self, keep_from: usize) -> Result<bool, PullError> {
        if keep_from > 0 {
            self.buf.copy_within(keep_from..self.len, 0);
            self.dropped += keep_from as u64;
            self.len -= keep_from;
            self.pos -= keep_from;
        }
        if self.eof {
            return Ok(false);
        }
        if self.len == self.buf.len() {
            // One token fills the whole buffer: grow it (bounded by that token's size).
            self.buf.resize(self.buf.len() * 2, 0);
        }
        loop {
            match self.src.read(&mut self.buf[self.len..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.len += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(PullError::Io {
                        at: self.at(),
                        source,
                    })
                }
            }
        }
    }

    /// The next byte that is not whitespace, without consuming it.
    #[inline(always)]
    fn peek(&mut self) -> Result<Option<u8>, PullError> {
        // Fast path: already at a token (every byte above 0x20 is one outside strings).
        if self.pos < self.len {
            let b = self.buf[self.pos];
            if b > b' ' {
                return Ok(Some(b));
            }
        }
        self.peek_slow()
    }

    #[inline(never)]
    fn peek_slow(&mut self) -> Result<Option<u8>, PullError> {
        loop {
            // Pretty-printed manifests indent every line: find the end of a run of spaces 8
            // bytes at a time (the first byte that differs from a space ends it).
            while let Some(word) = self
                .buf
                .get(self.pos..self.pos + 8)
                .filter(|_| self.pos + 8 <= self.len)
            {
                let diff = u64::from_le_bytes(word.try_into().unwrap_or([b' '; 8]))
                    ^ 0x2020_2020_2020_2020;
                self.pos += (diff.trailing_zeros() / 8) as usize;
                if diff == 0 {
                    continue;
                }
                match self.buf[self.pos] {
                    b'\n' | b'\r' | b'\t' => self.pos += 1,
                    b => return Ok(Some(b)),
                }
            }
            let rest = &self.buf[self.pos..self.len];
            if let Some(i) = rest
                .iter()
                .position(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
            {
                self.pos += i;
                return Ok(Some(rest[i]));
            }
            self.pos = self.len;
            if !self.fill(self.pos)? {
                return Ok(None);
            }
        }
    }

    #[inline(always)]
    fn expect(&mut self, want: u8) -> Result<(), PullError> {
        if self.pos < self.len && self.buf[self.pos] == want {
            self.pos += 1;
            return Ok(());
        }
        self.expect_slow(want)
    }

    #[inline(never)]
    fn expect_slow(&mut self, want: u8) -> Result<(), PullError> {
        match self.peek()? {
            Some(b) if b == want => {
                self.pos += 1;
                Ok(())
            }
            Some(b) => self.err(format!(
                "expected '{}', found '{}'",
                want as char,
                (b as char).escape_default()
            )),
            None => self.err(format!("expected '{}', found the end", want as char)),
        }
    }

    /// What kind of value comes next.
    pub fn next_kind(&mut self) -> Result<Next, PullError> {
        match self.peek()? {
            Some(b'{') => Ok(Next::Object),
            Some(b'[') => Ok(Next::Array),
            Some(b'"') => Ok(Next::String),
            Some(b'-' | b'0'..=b'9') => Ok(Next::Number),
            Some(b't' | b'f') => Ok(Next::Bool),
            Some(b'n') => Ok(Next::Null),
            Some(b) => self.err(format!(
                "expected a value, found '{}'",
                (b as char).escape_default()
            )),
            None => self.err("expected a value, found the end"),
        }
    }

    pub fn begin_object(&mut self) -> Result<(), PullError> {
        self.expect(b'{')?;
        self.first.push(true);
        Ok(())
    }

    pub fn begin_array(&mut self) -> Result<(), PullError> {
        self.expect(b'[')?;
        self.first.push(true);
        Ok(())
    }

    /// Moves to the next member or element of the innermost container. Returns false (and
    /// closes the container) at its end.
    fn advance(&mut self, close: u8) -> Result<bool, PullError> {
        let Some(first) = self.first.last().copied() else {
            return self.err("no open object or array");
        };
        if self.peek()? == Some(close) {
            self.pos += 1;
            self.first.pop();
            return Ok(false);
        }
        if !first {
            self.expect(b',')?;
        }
        if let Some(f) = self.first.last_mut() {
            *f = false;
        }
        Ok(true)
    }

    /// The next key of the current object (unescaped), or `None` at its end. The caller then
    /// reads or skips the member's value.
    pub fn next_key(&mut self) -> Result<Option<String>, PullError> {
        if !self.advance(b'}')? {
            return Ok(None);
        }
        let key = self.string()?;
        self.expect(b':')?;
        Ok(Some(key))
    }

    /// Like `next_key`, for a caller that knows the keys it wants: the key's position in
    /// `names` (`Some(None)` for any other key), without allocating for it. This is the hot
    /// path of reading a manifest of a million segments.
    /// `names` must be plain (no quotes, backslashes or control characters), as field names
    /// are.
    pub fn next_key_of(&mut self, names: &[&str]) -> Result<Option<Option<usize>>, PullError> {
        let list = names.as_ptr() as usize;
        let guess = if self.key_hint.0 == list {
            self.key_hint.1 + 1
        } else {
            0
        };
        if self.expected_key_follows(names, guess) {
            self.key_hint = (list, guess);
            return Ok(Some(Some(guess)));
        }
        if !self.advance(b'}')? {
            return Ok(None);
        }
        let (a, b, escaped) = self.raw_string()?;
        let unescaped;
        let key: &[u8] = if escaped {
            unescaped = self.unescape(a, b)?;
            unescaped.as_bytes()
        } else {
            &self.buf[a + 1..b - 1]
        };
        let found = match names.get(guess) {
            Some(n) if n.as_bytes() == key => Some(guess),
            _ => names.iter().position(|n| n.as_bytes() == key),
        };
        if let Some(i) = found {
            self.key_hint = (list, i);
        }
        self.expect(b':')?;
        Ok(Some(found))
    }

    /// The fast path of `next_key_of`: in compact JSON a record's members follow the order of
    /// the last one, so the cursor is usually at exactly `,"name":` (`"name":` for the first
    /// member) of the expected key. Consumes it and returns true then; otherwise consumes
    /// nothing. What it accepts is what the general path would read as that key, as a plain
    /// name needs no unescaping and the closing quote is checked.
    #[inline]
    fn expected_key_follows(&mut self, names: &[&str], guess: usize) -> bool {
        let (Some(name), Some(&first)) = (names.get(guess), self.first.last()) else {
            return false;
        };
        let name = name.as_bytes();
        let lead = usize::from(!first);
        let need = lead + name.len() + 3;
        let Some(text) = self.buf.get(self.pos..self.len).and_then(|t| t.get(..need)) else {
            return false;
        };
        let matches = (first || text[0] == b',')
            && text[lead] == b'"'
            && &text[lead + 1..lead + 1 + name.len()] == name
            && text[need - 2] == b'"'
            && text[need - 1] == b':';
        if matches {
            self.pos += need;
            if let Some(f) = self.first.last_mut() {
                *f = false;
            }
        }
        matches
    }

    /// Whether the current array has another element (positioned at it).
    pub fn next_element(&mut self) -> Result<bool, PullError> {
        self.advance(b']')
    }

    /// A string value, unescaped.
    pub fn string(&mut self) -> Result<String, PullError> {
        let (a, b, escaped) = self.raw_string()?;
        if escaped {
            return self.unescape(a, b);
        }
        match std::str::from_utf8(&self.buf[a + 1..b - 1]) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => self.err("a string is not valid UTF-8"),
        }
    }

    fn unescape(&self, a: usize, b: usize) -> Result<String, PullError> {
        serde_json::from_slice::<String>(&self.buf[a..b])
            .or_else(|e| self.err(format!("a string does not parse: {e}")))
    }

    /// Consumes a string token and returns where it is in the buffer (quotes included, valid
    /// until the next read) and whether it holds escapes.
    fn raw_string(&mut self) -> Result<(usize, usize, bool), PullError> {
        self.expect(b'"')?;
        let mut start = self.pos - 1;
        let mut i = self.pos;
        let mut escaped = false;
        loop {
            while i < self.len {
                let Some(n) = memchr::memchr2(b'"', b'\\', &self.buf[i..self.len]) else {
                    i = self.len;
                    break;
                };
                // JSON strings hold no raw control characters (checked without branching,
                // so the loop runs wide).
                let control = self.buf[i..i + n]
                    .iter()
                    .fold(false, |c, &b| c | (b < 0x20));
                if control {
                    return self.err("a control character inside a string");
                }
                i += n;
                if self.buf[i] == b'"' {
                    self.pos = i + 1;
                    return Ok((start, i + 1, escaped));
                }
                // A backslash: the next byte is escaped, whatever it is.
                escaped = true;
                i += 2;
            }
            let shift = start;
            self.pos = start;
            if !self.fill(start)? {
                return self.err("a string is not terminated");
            }
            i -= shift;
            start = 0;
        }
    }

    /// The raw text of a number token.
    fn number_token(&mut self) -> Result<(usize, usize), PullError> {
        if self.peek()?.is_none() {
            return self.err("expected a number, found the end");
        }
        let in_number = |b: &u8| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9');
        let mut start = self.pos;
        let mut i = self.pos;
        loop {
            match self.buf[i..self.len].iter().position(|b| !in_number(b)) {
                Some(n) => {
                    self.pos = i + n;
                    return Ok((start, i + n));
                }
                None => i = self.len,
            }
            let shift = start;
            self.pos = start;
            let more = self.fill(start)?;
            i -= shift;
            start = 0;
            if !more {
                self.pos = i;
                return Ok((start, i));
            }
        }
    }

    /// An integer that fits in i64 (JSON numbers with a fraction or exponent are refused, as
    /// the manifest's offsets, timestamps and counts are integers).
    pub fn i64(&mut self) -> Result<i64, PullError> {
        self.integer("an integer")
    }

    /// An integer that fits in u64.
    pub fn u64(&mut self) -> Result<u64, PullError> {
        self.integer("a non-negative integer")
    }

    fn integer<T: TryFrom<i128>>(&mut self, what: &str) -> Result<T, PullError> {
        if let Some(v) = self.plain_integer() {
            return T::try_from(v).or_else(|_| self.err(format!("{v} is out of range for {what}")));
        }
        let (a, b) = self.number_token()?;
        let text = &self.buf[a..b];
        let (negative, digits) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, text),
        };
        let mut magnitude = Some(0u64).filter(|_| !digits.is_empty());
        for &d in digits {
            let digit = d.wrapping_sub(b'0');
            magnitude = magnitude
                .filter(|_| digit <= 9)
                .and_then(|m| m.checked_mul(10))
                .and_then(|m| m.checked_add(u64::from(digit)));
        }
        let value = magnitude
            .map(i128::from)
            .map(|m| if negative { -m } else { m })
            .and_then(|v| T::try_from(v).ok());
        match value {
            Some(v) => Ok(v),
            None => {
                let shown = String::from_utf8_lossy(text).into_owned();
                self.err(format!("expected {what}, found {shown:?}"))
            }
        }
    }

    /// The fast path of `integer`: an optional minus and up to 18 digits, ended by a byte
    /// that cannot continue a number, all inside the buffer. Anything else (a fraction, an
    /// exponent, a long or cut number) is left to the general path, unconsumed.
    fn plain_integer(&mut self) -> Option<i128> {
        self.peek().ok()??;
        let rest = &self.buf[self.pos..self.len];
        let negative = rest.first() == Some(&b'-');
        let digits = &rest[usize::from(negative)..];
        let mut v: u64 = 0;
        let mut n = 0;
        // Eight digits at a time while they last (offsets and timestamps have 10 to 19).
        while n < 16 {
            let Some(word) = digits.get(n..n + 8) else {
                break;
            };
            let word = u64::from_le_bytes(word.try_into().ok()?);
            if !eight_digits(word) {
                break;
            }
            v = v * 100_000_000 + parse_eight_digits(word);
            n += 8;
        }
        while n < digits.len() && n < 19 && digits[n].is_ascii_digit() {
            v = v * 10 + u64::from(digits[n] - b'0');
            n += 1;
        }
        let next = *digits.get(n)?;
        if n == 0 || n > 18 || matches!(next, b'.' | b'e' | b'E' | b'+' | b'-' | b'0'..=b'9') {
            return None;
        }
        self.pos += usize::from(negative) + n;
        let v = i128::from(v);
        Some(if negative { -v } else { v })
    }

    /// Consumes `null` if it comes next.
    pub fn null(&mut self) -> Result<bool, PullError> {
        if self.peek()? != Some(b'n') {
            return Ok(false);
        }
        self.literal(b"null")?;
        Ok(true)
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), PullError> {
        for &w in word {
            if self.pos >= self.len && !self.fill(self.pos)? {
                return self.err("the text ends inside a literal");
            }
            if self.buf[self.pos] != w {
                return self.err(format!(
                    "expected {:?}",
                    String::from_utf8_lossy(word).into_owned()
                ));
            }
            self.pos += 1;
        }
        Ok(())
    }

    /// The next value as its raw text, for values decoded with serde (small, rarely used
    /// parts of a document). The whole value is buffered, so use it only where that is fine.
    pub fn raw_value(&mut self) -> Result<Vec<u8>, PullError> {
        self.peek()?;
        let mut out = Vec::new();
        self.scan_value(Some(&mut out))?;
        Ok(out)
    }

    /// Skips the next value, whatever it is, without keeping it.
    pub fn skip_value(&mut self) -> Result<(), PullError> {
        self.peek()?;
        self.scan_value(None)
    }

    /// Walks one value by bracket structure and string quoting, copying it into `keep` when
    /// given.
    fn scan_value(&mut self, mut keep: Option<&mut Vec<u8>>) -> Result<(), PullError> {
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escape = false;
        let mut started = false;
        loop {
            let mut i = self.pos;
            let mut done = false;
            while i < self.len {
                let b = self.buf[i];
                i += 1;
                if in_string {
                    if escape {
                        escape = false;
                    } else if b == b'\\' {
                        escape = true;
                    } else if b == b'"' {
                        in_string = false;
                        if depth == 0 {
                            done = true;
                            break;
                        }
                    }
                    continue;
                }
                match b {
                    b'"' => {
                        in_string = true;
                        started = true;
                    }
                    b'{' | b'[' => {
                        depth += 1;
                        started = true;
                    }
                    b'}' | b']' => {
                        if depth == 0 {
                            // The end of the enclosing container: the value ended before it.
                            i -= 1;
                            done = true;
                            break;
                        }
                        depth -= 1;
                        if depth == 0 {
                            done = true;
                            break;
                        }
                    }
                    b',' if depth == 0 => {
                        i -= 1;
                        done = true;
                        break;
                    }
                    b' ' | b'\n' | b'\r' | b'\t' if depth == 0 && started => {
                        i -= 1;
                        done = true;
                        break;
                    }
                    _ => started = true,
                }
            }
            if let Some(out) = keep.as_deref_mut() {
                out.extend_from_slice(&self.buf[self.pos..i]);
            }
            self.pos = i;
            if done {
                if !started {
                    return self.err("expected a value");
                }
                return Ok(());
            }
            if !self.fill(self.pos)? {
                if depth == 0 && !in_string && started {
                    return Ok(());
                }
                return self.err("the text ends inside a value");
            }
        }
    }

    /// Checks that nothing but whitespace follows the document.
    pub fn end(&mut self) -> Result<(), PullError> {
        match self.peek()? {
            None => Ok(()),
            Some(_) => self.err("trailing characters after the document"),
        }
    }
}

/// Whether the 8 bytes of `w` (little-endian) are all ASCII digits.
fn eight_digits(w: u64) -> bool {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    w & HIGH == ZEROS && w.wrapping_add(0x0606_0606_0606_0606) & HIGH == ZEROS
}

/// The value of 8 ASCII digits (little-endian bytes, first digit lowest), by pairing digits,
/// then pairs, then quads.
fn parse_eight_digits(w: u64) -> u64 {
    let d = w - 0x3030_3030_3030_3030;
    let d = (d * 10 + (d >> 8)) & 0x00FF_00FF_00FF_00FF;
    let d = (d * 100 + (d >> 16)) & 0x0000_FFFF_0000_FFFF;
    (d * 10_000 + (d >> 32)) & 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out one byte per call, so every token crosses a refill.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    fn walk<R: Read>(p: &mut JsonPull<R>) -> Result<serde_json::Value, PullError> {
        use serde_json::Value;
        Ok(match p.next_kind()? {
            Next::Object => {
                p.begin_object()?;
                let mut m = serde_json::Map::new();
                while let Some(k) = p.next_key()? {
                    let v = walk(p)?;
                    m.insert(k, v);
                }
                Value::Object(m)
            }
            Next::Array => {
                p.begin_array()?;
                let mut v = Vec::new();
                while p.next_element()? {
                    v.push(walk(p)?);
                }
                Value::Array(v)
            }
            Next::String => Value::String(p.string()?),
            Next::Number => Value::from(p.i64()?),
            Next::Null => {
                p.null()?;
                Value::Null
            }
            Next::Bool => {
                serde_json::from_slice(&p.raw_value()?).map_err(|e| PullError::Syntax {
                    at: 0,
                    what: e.to_string(),
                })?
            }
        })
    }

    #[test]
    fn reads_what_serde_reads_across_refills() {
        let text = r#" { "a" : [1, -2, {"k\"e\\y": "v\u00e9\n"}, null, true, []],
            "b": {}, "c": "plain", "d": [[[]]], "e": false } "#;
        let want: serde_json::Value = serde_json::from_str(text).unwrap();
        let mut p = JsonPull::new(Trickle(text.as_bytes()));
        assert_eq!(walk(&mut p).unwrap(), want);
        p.end().unwrap();
        let mut p = JsonPull::new(text.as_bytes());
        assert_eq!(walk(&mut p).unwrap(), want);
    }

    #[test]
    fn skips_and_keeps_raw_values() {
        let text = r#"{"skip": {"x": [1, "]}", {"y": "\"}"}]}, "raw": [1, {"z": null}], "n": 7}"#;
        let mut p = JsonPull::new(Trickle(text.as_bytes()));
        p.begin_object().unwrap();
        assert_eq!(p.next_key().unwrap().as_deref(), Some("skip"));
        p.skip_value().unwrap();
        assert_eq!(p.next_key().unwrap().as_deref(), Some("raw"));
        let raw = p.raw_value().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(v, serde_json::json!([1, {"z": null}]));
        assert_eq!(p.next_key().unwrap().as_deref(), Some("n"));
        p.skip_value().unwrap();
        assert_eq!(p.next_key().unwrap(), None);
        p.end().unwrap();
    }

    #[test]
    fn integers_of_every_length_and_their_limits() {
        for v in [
            0i64,
            7,
            -7,
            12_345_678,
            123_456_789,
            1_700_000_000_000,
            i64::MAX,
            i64::MIN,
        ] {
            let text = format!("[{v}, {v}]");
            let mut p = JsonPull::new(Trickle(text.as_bytes()));
            p.begin_array().unwrap();
            assert!(p.next_element().unwrap());
            assert_eq!(p.i64().unwrap(), v, "{text}");
            let mut q = JsonPull::new(text.as_bytes());
            q.begin_array().unwrap();
            assert!(q.next_element().unwrap());
            assert_eq!(q.i64().unwrap(), v, "{text}");
        }
        let big = format!("[{}]", u64::MAX);
        let mut p = JsonPull::new(big.as_bytes());
        p.begin_array().unwrap();
        p.next_element().unwrap();
        assert_eq!(p.u64().unwrap(), u64::MAX);
        for bad in [
            "[18446744073709551616]",
            "[9223372036854775808]",
            "[12345678.5]",
            "[1e3]",
            "[-]",
        ] {
            let mut p = JsonPull::new(bad.as_bytes());
            p.begin_array().unwrap();
            p.next_element().unwrap();
            assert!(p.i64().is_err(), "{bad}");
        }
    }

    /// Every member of `text` read with `next_key_of(NAMES)`: (position in NAMES, value).
    fn known_members<R: Read>(p: &mut JsonPull<R>) -> Vec<(Option<usize>, i64)> {
        const NAMES: [&str; 3] = ["a", "ab", "b"];
        let mut out = Vec::new();
        p.begin_object().unwrap();
        while let Some(k) = p.next_key_of(&NAMES).unwrap() {
            out.push((k, p.i64().unwrap()));
        }
        p.end().unwrap();
        out
    }

    #[test]
    fn known_keys_match_exactly_in_any_order_and_layout() {
        for (text, want) in [
            (
                r#"{"a":1,"ab":2,"b":3}"#,
                vec![(Some(0), 1), (Some(1), 2), (Some(2), 3)],
            ),
            // A key the expected one is a prefix of, and keys out of order.
            (
                r#"{"ab":2,"a":1,"abc":9,"b":3}"#,
                vec![(Some(1), 2), (Some(0), 1), (None, 9), (Some(2), 3)],
            ),
            (
                r#"{ "a" : 1 , "ab":2,"b" :3}"#,
                vec![(Some(0), 1), (Some(1), 2), (Some(2), 3)],
            ),
            (
                r#"{"a":1,"a\u0062":2,"b":3}"#,
                vec![(Some(0), 1), (Some(1), 2), (Some(2), 3)],
            ),
            (
                r#"{"a":1,"b":3,"a":4}"#,
                vec![(Some(0), 1), (Some(2), 3), (Some(0), 4)],
            ),
            ("{}", vec![]),
        ] {
            assert_eq!(
                known_members(&mut JsonPull::new(text.as_bytes())),
                want,
                "{text}"
            );
            assert_eq!(
                known_members(&mut JsonPull::new(Trickle(text.as_bytes()))),
                want,
                "{text}"
            );
        }
        for bad in [r#"{"a"1}"#, r#"{"a":1"ab":2}"#, r#"{"a":1,,"ab":2}"#] {
            let mut p = JsonPull::new(bad.as_bytes());
            p.begin_object().unwrap();
            let got = (|| {
                while p.next_key_of(&["a", "ab"])?.is_some() {
                    p.i64()?;
                }
                Ok::<_, PullError>(())
            })();
            assert!(got.is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_position() {
        for bad in [
            r#"{"a" 1}"#,
            r#"{"a": 1,}"#,
            r#"{"a": "unterminated"#,
            r#"{"a": 1.5}"#,
            r#"{"a": 1} x"#,
            r#"{"a": nul}"#,
        ] {
            let mut p = JsonPull::new(Trickle(bad.as_bytes()));
            let got = walk(&mut p).and_then(|_| p.end());
            let e = got.expect_err(bad).to_string();
            assert!(e.starts_with("at byte "), "{bad}: {e}");
        }
    }
}

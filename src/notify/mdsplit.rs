//! Splits a markdown text into pieces that each fit a size budget, for chat
//! services that reject long bodies (DingTalk: 20000 bytes).
//!
//! Cuts go, in order of preference: between blocks (at blank lines), between
//! lines of a block, and only inside a line that alone is too long, at a space
//! outside links, emphasis and inline code. A fenced code block is kept whole
//! when it fits; otherwise each piece closes the fence and the next reopens
//! it. A table too long for one piece is cut between rows, and each piece
//! after the first starts again with the table's header row and delimiter
//! row, so that every piece renders as a table. Concatenating the pieces
//! (with the separators the cuts removed, and without the repeated table
//! headers) gives back the text, so nothing is lost.

/// Splits `text` into pieces whose `cost` is at most `budget` each. `cost`
/// must be additive over concatenation (a byte count, or the length of the
/// JSON-escaped string), so that pieces can be priced as they grow.
pub fn split(text: &str, budget: usize, cost: &dyn Fn(&str) -> usize) -> Vec<String> {
    let mut out = Splitter {
        parts: Vec::new(),
        cur: String::new(),
        budget: budget.max(1),
        cost,
    };
    for block in blocks(text) {
        out.block(&block);
    }
    out.finish()
}

/// One block: lines between blank lines, or a whole fenced code block.
#[derive(Debug)]
struct Block {
    lines: Vec<String>,
    /// The opening fence line (```` ```lang ````) for a fenced block.
    fence: Option<String>,
}

impl Block {
    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

fn fence_marker(line: &str) -> Option<&'static str> {
    let t = line.trim_start();
    if t.starts_with("```") {
        Some("```")
    } else if t.starts_with("~~~") {
        Some("~~~")
    } else {
        None
    }
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut open: Option<(&'static str, String)> = None;
    let flush = |cur: &mut Vec<String>, out: &mut Vec<Block>, fence: Option<String>| {
        if !cur.is_empty() {
            out.push(Block {
                lines: std::mem::take(cur),
                fence,
            });
        }
    };
    for line in text.split('\n') {
        if let Some((marker, opening)) = &open {
            cur.push(line.to_owned());
            if line.trim_start().starts_with(marker) {
                let opening = opening.clone();
                open = None;
                flush(&mut cur, &mut out, Some(opening));
            }
            continue;
        }
        if let Some(marker) = fence_marker(line) {
            flush(&mut cur, &mut out, None);
            open = Some((marker, line.to_owned()));
            cur.push(line.to_owned());
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut cur, &mut out, None);
        } else {
            cur.push(line.to_owned());
        }
    }
    // An unclosed fence is kept as written.
    let fence = open.map(|(_, o)| o);
    flush(&mut cur, &mut out, fence);
    out
}

struct Splitter<'a> {
    parts: Vec<String>,
    cur: String,
    budget: usize,
    cost: &'a dyn Fn(&str) -> usize,
}

impl Splitter<'_> {
    fn fits(&self, sep: &str, piece: &str) -> bool {
        let add = if self.cur.is_empty() {
            (self.cost)(piece)
        } else {
            (self.cost)(sep) + (self.cost)(piece)
        };
        (self.cost)(&self.cur) + add <= self.budget
    }

    fn push(&mut self, sep: &str, piece: &str) {
        if !self.cur.is_empty() {
            self.cur.push_str(sep);
        }
        self.cur.push_str(piece);
    }

    fn cut(&mut self) {
        if !self.cur.is_empty() {
            self.parts.push(std::mem::take(&mut self.cur));
        }
    }

    fn block(&mut self, b: &Block) {
        let text = b.text();
        if self.fits("\n\n", &text) {
            self.push("\n\n", &text);
            return;
        }
        if (self.cost)(&text) <= self.budget {
            self.cut();
            self.push("", &text);
            return;
        }
        // Too long for any piece: it is split anyway, so fill pieces with it.
        match &b.fence {
            Some(opening) => {
                self.cut();
                self.fenced(b, opening);
            }
            None if is_table(&b.lines) => self.table(b),
            None => {
                for (i, line) in b.lines.iter().enumerate() {
                    self.line(line, if i == 0 { "\n\n" } else { "\n" });
                }
            }
        }
    }

    /// A fenced block too long for one piece: close the fence before each cut
    /// and reopen it after.
    fn fenced(&mut self, b: &Block, opening: &str) {
        let marker = fence_marker(opening).unwrap_or("```");
        let close_cost = (self.cost)("\n") + (self.cost)(marker);
        let inner = &b.lines[1..];
        let (body, closing) = match inner.last() {
            Some(l) if l.trim_start().starts_with(marker) => (&inner[..inner.len() - 1], Some(l)),
            _ => (inner, None),
        };
        self.push("", opening);
        let mut fresh = true;
        for line in body {
            // Room for the line and for closing the fence after it.
            let fits = (self.cost)(&self.cur) + (self.cost)("\n") + (self.cost)(line) + close_cost
                <= self.budget;
            if !fits && !fresh {
                self.push("\n", marker);
                self.cut();
                self.push("", opening);
            }
            fresh = false;
            let room = self
                .budget
                .saturating_sub((self.cost)(&self.cur) + (self.cost)("\n") + close_cost);
            if (self.cost)(line) <= room {
                self.push("\n", line);
                continue;
            }
            // A code line longer than a piece: cut it where it must be.
            let mut rest = line.as_str();
            while !rest.is_empty() {
                let room = self
                    .budget
                    .saturating_sub((self.cost)(&self.cur) + (self.cost)("\n") + close_cost);
                let at = hard_cut(rest, room, self.cost);
                self.push("\n", &rest[..at]);
                rest = &rest[at..];
                if !rest.is_empty() {
                    self.push("\n", marker);
                    self.cut();
                    self.push("", opening);
                }
            }
        }
        if let Some(c) = closing {
            self.push("\n", c);
        }
    }

    /// A table too long for one piece: rows go where they fit, and a piece
    /// that starts inside the table starts with its header again. A header
    /// too large to repeat alongside a row is not repeated.
    fn table(&mut self, b: &Block) {
        let header = b.lines[..2].join("\n");
        // Never leave a header alone at the end of a piece.
        let opening = match b.lines.get(2) {
            Some(row) => format!("{header}\n{row}"),
            None => header.clone(),
        };
        if !self.fits("\n\n", &opening) {
            self.cut();
        }
        self.line(&b.lines[0], "\n\n");
        self.line(&b.lines[1], "\n");
        for row in &b.lines[2..] {
            if self.fits("\n", row) {
                self.push("\n", row);
                continue;
            }
            self.cut();
            if (self.cost)(&header) + (self.cost)("\n") + (self.cost)(row) <= self.budget {
                self.push("", &header);
            }
            self.line(row, "\n");
        }
    }

    /// One line of a block too long for one piece.
    fn line(&mut self, line: &str, sep: &str) {
        if self.fits(sep, line) {
            self.push(sep, line);
            return;
        }
        if (self.cost)(line) <= self.budget {
            self.cut();
            self.push("", line);
            return;
        }
        // Longer than a piece: start it in this one (unless little room is
        // left), and cut it at spaces.
        let mut sep = sep;
        let mut rest = line;
        while !rest.is_empty() {
            if self.fits(sep, rest) {
                self.push(sep, rest);
                return;
            }
            let used = if self.cur.is_empty() {
                0
            } else {
                (self.cost)(&self.cur) + (self.cost)(sep)
            };
            let room = self.budget.saturating_sub(used);
            if room < self.budget / 8 {
                self.cut();
                continue;
            }
            let at = soft_cut(rest, room, self.cost);
            self.push(sep, rest[..at].trim_end());
            self.cut();
            sep = "";
            rest = rest[at..].trim_start();
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.cut();
        if self.parts.is_empty() {
            self.parts.push(String::new());
        }
        self.parts
    }
}

/// Whether a block is a markdown table: a header row, then a delimiter row
/// of `|`, `-`, `:` and spaces with at least one `-`.
fn is_table(lines: &[String]) -> bool {
    let [head, delim, ..] = lines else {
        return false;
    };
    head.trim_start().starts_with('|')
        && delim.contains('-')
        && delim.contains('|')
        && delim
            .chars()
            .all(|c| matches!(c, '|' | '-' | ':' | ' ' | '\t'))
}

/// The longest prefix of `s` (at a char boundary, at least one char) whose
/// cost is at most `room`.
fn hard_cut(s: &str, room: usize, cost: &dyn Fn(&str) -> usize) -> usize {
    let mut used = 0;
    let mut end = 0;
    for (i, c) in s.char_indices() {
        let mut buf = [0u8; 4];
        let w = cost(c.encode_utf8(&mut buf));
        if used + w > room {
            break;
        }
        used += w;
        end = i + c.len_utf8();
    }
    if end == 0 {
        s.chars().next().map_or(0, char::len_utf8)
    } else {
        end
    }
}

/// Where to cut a too-long line: the last space within `room` that is
/// outside a link, emphasis or inline code; else the last space; else
/// wherever the budget ends.
fn soft_cut(s: &str, room: usize, cost: &dyn Fn(&str) -> usize) -> usize {
    let limit = hard_cut(s, room, cost);
    let bytes = s.as_bytes();
    let (mut bracket, mut paren, mut bold, mut code) = (0i32, 0i32, false, false);
    let mut safe = None;
    let mut any_space = None;
    let mut i = 0;
    while i < limit {
        let b = bytes[i];
        match b {
            b'`' => code = !code,
            b'*' if !code && bytes.get(i + 1) == Some(&b'*') => {
                bold = !bold;
                i += 1;
            }
            b'[' if !code => bracket += 1,
            b']' if !code && bracket > 0 => {
                bracket -= 1;
                if bytes.get(i + 1) == Some(&b'(') {
                    paren += 1;
                    i += 1;
                }
            }
            b')' if !code && paren > 0 => paren -= 1,
            b' ' if i > 0 => {
                any_space = Some(i);
                if bracket == 0 && paren == 0 && !bold && !code {
                    safe = Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    safe.or(any_space).unwrap_or(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> usize {
        s.len()
    }

    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    #[test]
    fn short_text_is_one_piece() {
        assert_eq!(split("a\n\nb", 100, &bytes), ["a\n\nb"]);
    }

    #[test]
    fn cuts_prefer_blank_lines_then_lines() {
        let text = "# title\n\npara one line\n\n- item 1\n- item 2\n- item 3";
        let parts = split(text, 24, &bytes);
        assert!(parts.iter().all(|p| p.len() <= 24), "{parts:?}");
        assert_eq!(parts[0], "# title\n\npara one line");
        assert_eq!(parts[1], "- item 1\n- item 2");
        assert_eq!(parts[2], "- item 3");
    }

    #[test]
    fn long_lines_are_cut_at_a_space_outside_links() {
        let text = "see [the incident page](https://x.example/incidents/1) now and more words here";
        let parts = split(text, 40, &bytes);
        assert!(parts.iter().all(|p| p.len() <= 40), "{parts:?}");
        assert!(
            parts[0] == "see",
            "never inside the link when avoidable: {parts:?}"
        );
        assert_eq!(words(&parts.join(" ")), words(text));
    }

    #[test]
    fn fences_are_closed_and_reopened() {
        let code: Vec<String> = (0..20).map(|i| format!("line {i:02}")).collect();
        let text = format!("intro\n\n```text\n{}\n```\n\nafter", code.join("\n"));
        let parts = split(&text, 60, &bytes);
        assert!(parts.iter().all(|p| p.len() <= 60), "{parts:?}");
        for p in &parts {
            assert_eq!(p.matches("```").count() % 2, 0, "unbalanced fence in {p:?}");
        }
        let joined = parts.join("\n");
        for l in &code {
            assert_eq!(joined.matches(l.as_str()).count(), 1, "{l}");
        }
    }

    #[test]
    fn long_tables_repeat_their_header_in_every_piece() {
        let header = "| node | status |\n|---|:---:|";
        let rows: Vec<String> = (0..30).map(|i| format!("| node-{i:02} | down |")).collect();
        let text = format!("intro\n\n{header}\n{}\n\nafter", rows.join("\n"));
        let parts = split(&text, 120, &bytes);
        assert!(parts.len() > 3, "{parts:?}");
        assert!(parts.iter().all(|p| p.len() <= 120), "{parts:?}");
        let with_rows: Vec<&String> = parts.iter().filter(|p| p.contains("| node-")).collect();
        for p in &with_rows {
            assert!(
                p.contains(header),
                "a piece of the table lacks its header: {p:?}"
            );
        }
        // Every row once, in order; the header only where rows are.
        let joined = parts.join("\n");
        let mut last = 0;
        for r in &rows {
            assert_eq!(joined.matches(r.as_str()).count(), 1, "{r}");
            let at = joined.find(r.as_str()).unwrap();
            assert!(at > last, "{r} out of order");
            last = at;
        }
        assert_eq!(joined.matches(header).count(), with_rows.len());
        assert!(parts[0].starts_with("intro"));
        assert!(parts.last().unwrap().ends_with("after"));
    }

    #[test]
    fn pipes_without_a_delimiter_row_are_not_a_table() {
        assert!(!is_table(&["| a | b |".into(), "| c | d |".into()]));
        assert!(is_table(&["| a | b |".into(), "| --- | ---: |".into()]));
    }

    #[test]
    fn multibyte_text_is_cut_at_char_boundaries_and_nothing_is_lost() {
        let text = "很长的解释".repeat(200);
        let parts = split(&text, 100, &bytes);
        assert!(parts.iter().all(|p| p.len() <= 100 && !p.is_empty()));
        assert_eq!(parts.concat(), text);
    }
}

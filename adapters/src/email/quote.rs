//! Quoted-reply trimming: the part of a reply the person wrote, without the earlier
//! messages their client quoted below it. The full text is kept beside it.

/// The new text of a reply: everything before the first attribution line ("On ... wrote:"),
/// Outlook separator or run of `>`-quoted lines, trimmed.
pub fn reply_part(text: &str) -> &str {
    let mut end = text.len();
    let mut offset = 0;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        let next = lines.get(i + 1).map(|l| l.trim()).unwrap_or_default();
        if trimmed.starts_with('>')
            || is_attribution(trimmed)
            || is_attribution(&format!("{trimmed} {next}"))
            || is_separator(trimmed)
        {
            end = offset;
            break;
        }
        offset += line.len();
    }
    text[..end].trim()
}

/// "On Tue, 3 Mar 2026 at 10:00, Ann <ann@x.test> wrote:" and its translations' shape:
/// a line that ends with "wrote:" or "schrieb:" or "a écrit :" after some words.
fn is_attribution(line: &str) -> bool {
    const ENDINGS: [&str; 4] = ["wrote:", "schrieb:", "a écrit :", "escribió:"];
    let lower = line.to_lowercase();
    ENDINGS.iter().any(|e| lower.ends_with(e)) && lower.split_whitespace().count() >= 3
}

fn is_separator(line: &str) -> bool {
    line.starts_with("-----Original Message-----")
        || line.starts_with("________________________________")
        || line == "-- Forwarded message --"
}

#[cfg(test)]
mod tests {
    use super::reply_part;

    #[test]
    fn quoted_history_is_trimmed_from_replies() {
        let gmail = "Yes, tomorrow works.\r\n\r\nOn Mon, 2 Nov 2026 at 10:00, Shop <shop@omnigate.test> wrote:\r\n> Can we deliver tomorrow?\r\n";
        assert_eq!(reply_part(gmail), "Yes, tomorrow works.");
        let wrapped =
            "Fine\nOn Mon, 2 Nov 2026 at 10:00, Shop\n<shop@omnigate.test> wrote:\n> hi\n";
        assert_eq!(reply_part(wrapped), "Fine");
        let outlook = "Thanks!\n\n-----Original Message-----\nFrom: Shop\n";
        assert_eq!(reply_part(outlook), "Thanks!");
        let outlook_web = "Sure\n________________________________\nFrom: Shop\n";
        assert_eq!(reply_part(outlook_web), "Sure");
        let forwarded = "See below\n-- Forwarded message --\nFrom: Ann\n";
        assert_eq!(reply_part(forwarded), "See below");
        let bare = "ok\n> earlier\n> text";
        assert_eq!(reply_part(bare), "ok");
        assert_eq!(reply_part("no quote here\nsecond line"), "no quote here\nsecond line");
        assert_eq!(reply_part("> only quotes"), "");
        // "wrote:" inside a sentence is not an attribution.
        assert_eq!(reply_part("I wrote: nothing\nmore"), "I wrote: nothing\nmore");
    }
}

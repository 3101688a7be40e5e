//! How many SMS segments a body takes. Twilio paces and bills a sender by segment, not by
//! message (a US long code sends about one segment a second), so a route's rate limit has
//! to count them: a 400-character body is three sends' worth of throughput.
//!
//! A body that the GSM 03.38 default alphabet can carry is sent in 7-bit septets: 160 fit
//! one segment, 153 each part of a longer one (the concatenation header takes the rest),
//! and the extension table's characters cost two septets (an escape, then the character).
//! Any other character sends the whole body as UCS-2 (UTF-16 code units): 70 in one
//! segment, 67 a part. A part never ends between an escape and its character, nor inside
//! a surrogate pair, so such a character that does not fit opens the next part.

/// Segments of `body`; at least one, since an empty body still goes as one message.
pub fn segments(body: &str) -> u32 {
    match gsm7_septets(body) {
        Some(septets) => split(septets, 160, 153, body.chars().map(|c| gsm7_width(c).unwrap_or(1))),
        None => {
            let units = body.encode_utf16().count();
            split(units, 70, 67, body.chars().map(|c| c.len_utf16() as u32))
        }
    }
}

/// Parts of `widths`, whose sum is `total`: one when it fits `single`, else packed into
/// parts of `part` without splitting a character.
fn split(total: usize, single: u32, part: u32, widths: impl Iterator<Item = u32>) -> u32 {
    if total <= single as usize {
        return 1;
    }
    let (mut parts, mut used) = (1, 0);
    for width in widths {
        if used + width > part {
            parts += 1;
            used = 0;
        }
        used += width;
    }
    parts
}

/// Septets `body` takes in the GSM 7-bit alphabet, or `None` when it needs UCS-2.
fn gsm7_septets(body: &str) -> Option<usize> {
    body.chars().try_fold(0usize, |sum, c| Some(sum + gsm7_width(c)? as usize))
}

/// Septets one character takes in the GSM 7-bit alphabet; `None` outside it.
fn gsm7_width(c: char) -> Option<u32> {
    match c {
        // The extension table: reached through an escape septet.
        '\u{c}' | '^' | '{' | '}' | '\\' | '[' | '~' | ']' | '|' | '€' => Some(2),
        // Printable ASCII but the backtick (and the extension characters above), which the
        // default alphabet shares with ASCII, and line breaks.
        ' '..='_' | 'a'..='~' | '\n' | '\r' => Some(1),
        '£' | '¥' | 'è' | 'é' | 'ù' | 'ì' | 'ò' | 'Ç' | 'Ø' | 'ø' | 'Å' | 'å' | 'Δ' | 'Φ' | 'Γ'
        | 'Λ' | 'Ω' | 'Π' | 'Ψ' | 'Σ' | 'Θ' | 'Ξ' | 'Æ' | 'æ' | 'ß' | 'É' | '¤' | '¡' | 'Ä'
        | 'Ö' | 'Ñ' | 'Ü' | '§' | '¿' | 'ä' | 'ö' | 'ñ' | 'ü' | 'à' => Some(1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::segments;

    // shared/providers/README.md, Twilio throughput: "Count segments, not messages: 160
    // GSM-7 chars (153 per part when concatenated) or 70 UCS-2 chars (67 per part)."
    #[test]
    fn gsm7_bodies_take_160_septets_alone_and_153_a_part() {
        assert_eq!(segments(""), 1);
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(306)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        // Accented letters and Greek capitals of the default alphabet stay 7-bit.
        assert_eq!(segments(&"é".repeat(160)), 1);
        assert_eq!(segments(&"Ω£¿".repeat(60)), 2);
    }

    #[test]
    fn extension_characters_cost_two_septets_and_stay_whole_in_a_part() {
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"{".repeat(81)), 2);
        // 306 septets would fill two parts, but 152 leave one septet, which an escape pair
        // does not fit: it opens the second part, and the last septet spills into a third.
        assert_eq!(segments(&format!("{0}]{0}", "a".repeat(152))), 3);
        assert_eq!(segments(&format!("{}{}", "a".repeat(152), "]".repeat(77))), 3);
    }

    #[test]
    fn one_character_outside_the_alphabet_sends_the_body_as_ucs2() {
        assert_eq!(segments(&"ж".repeat(70)), 1);
        assert_eq!(segments(&"ж".repeat(71)), 2);
        assert_eq!(segments(&"ж".repeat(134)), 2);
        assert_eq!(segments(&"ж".repeat(135)), 3);
        // 159 GSM characters alone are one segment; with a backtick, 160 code units of UCS-2.
        assert_eq!(segments(&"a".repeat(159)), 1);
        assert_eq!(segments(&format!("{}`", "a".repeat(159))), 3);
    }

    #[test]
    fn characters_beyond_the_basic_plane_take_two_units_and_are_not_split() {
        assert_eq!(segments(&"😀".repeat(35)), 1);
        // 33 emoji fill 66 of a part's 67 units; the 34th opens the next part.
        assert_eq!(segments(&"😀".repeat(36)), 2);
        assert_eq!(segments(&"😀".repeat(67)), 3);
        assert_eq!(segments(&"😀".repeat(66)), 2);
    }
}

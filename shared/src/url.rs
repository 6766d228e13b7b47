//! The few URL pieces ReMarketable reads: percent-decoding and the query parameters of a page
//! URL (UTM tags). One parser, used by the event contract and the database URL reader.

/// `text` with `%XX` escapes decoded; with `plus_is_space`, `+` reads as a space (the
/// `application/x-www-form-urlencoded` rule of query strings). `None` when an escape is
/// malformed or the bytes are not UTF-8.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The decoded value of the first query parameter of `url` named `name` (keys compared after
/// decoding, exactly). The query is the text after the first `?` up to the first `#`. `None`
/// when the parameter is absent or its key or value does not decode.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let (_, rest) = url.split_once('?')?;
    let query = rest.split_once('#').map_or(rest, |(q, _)| q);
    let (_, value) = query
        .split('&')
        .map(|part| part.split_once('=').unwrap_or((part, "")))
        .find(|(key, _)| percent_decode(key, true).is_some_and(|k| k == name))?;
    percent_decode(value, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_plus() {
        assert_eq!(percent_decode("a%20b+c", true).as_deref(), Some("a b c"));
        assert_eq!(percent_decode("a%20b+c", false).as_deref(), Some("a b+c"));
        assert_eq!(
            percent_decode("%C3%A9t%C3%A9", true).as_deref(),
            Some("été")
        );
        assert_eq!(percent_decode("bad%2", true), None);
        assert_eq!(percent_decode("bad%zz", true), None);
        assert_eq!(percent_decode("%+1", true), None);
        assert_eq!(percent_decode("%FF", true), None);
    }

    #[test]
    fn finds_the_first_named_parameter() {
        let url = "https://shop.example/p/1?x=1&utm_campaign=black+friday&utm_campaign=other#utm_source=frag";
        assert_eq!(
            query_param(url, "utm_campaign").as_deref(),
            Some("black friday")
        );
        assert_eq!(query_param(url, "utm_source"), None);
        assert_eq!(query_param(url, "x").as_deref(), Some("1"));
        assert_eq!(query_param("https://shop.example/p/1", "x"), None);
        assert_eq!(
            query_param("/p?utm%5Fmedium=cpc", "utm_medium").as_deref(),
            Some("cpc")
        );
        assert_eq!(query_param("/p?flag&y=2", "flag").as_deref(), Some(""));
        assert_eq!(query_param("/p?a=%zz&a=ok", "a"), None);
    }
}

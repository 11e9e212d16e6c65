//! Just enough `multipart/form-data` (RFC 7578) reading for the issuance endpoint: named parts,
//! their bytes, nothing streamed.

use std::collections::BTreeMap;

/// The `boundary` parameter of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut parameters = content_type.split(';');
    let media_type = parameters.next()?.trim();
    if !media_type.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    parameters.find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
    })
}

/// The parts of `body` by field name (the last one wins for a repeated name), or `None` when
/// the body is not well-formed multipart.
pub fn parse(body: &[u8], boundary: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    let delimiter = format!("--{boundary}").into_bytes();
    let mut parts = BTreeMap::new();
    let mut rest = &body[find(body, &delimiter)? + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            return Some(parts);
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let header_end = find(rest, b"\r\n\r\n")?;
        let headers = std::str::from_utf8(&rest[..header_end]).ok()?;
        let content = &rest[header_end + 4..];
        let mut closing = b"\r\n".to_vec();
        closing.extend_from_slice(&delimiter);
        let end = find(content, &closing)?;
        if let Some(name) = field_name(headers) {
            parts.insert(name, content[..end].to_vec());
        }
        rest = &content[end + closing.len()..];
    }
}

fn field_name(headers: &str) -> Option<String> {
    headers.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("content-disposition") {
            return None;
        }
        value.split(';').find_map(|parameter| {
            let (key, value) = parameter.split_once('=')?;
            (key.trim() == "name").then(|| value.trim().trim_matches('"').to_owned())
        })
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_read_by_name() {
        let body = b"preamble\r\n--b1\r\nContent-Disposition: form-data; name=\"pkcs10\"\r\n\
            Content-Type: application/pkcs10\r\n\r\nMIIB\r\n--b1\r\n\
            Content-Disposition: form-data; name=\"procname\"\r\n\r\nTLS Server\r\n--b1--\r\n";
        let parts = parse(body, &boundary("multipart/form-data; boundary=\"b1\"").unwrap()).unwrap();
        assert_eq!(parts["pkcs10"], b"MIIB");
        assert_eq!(parts["procname"], b"TLS Server");
    }
}

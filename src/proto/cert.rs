//! A worker's identity in its TLS client certificate: the common name
//! (CN, OID 2.5.4.3) of the certificate's subject. The subject comes from
//! a certificate the TLS handshake has already verified against
//! `heartbeat_tls_client_ca_file`; this only reads it, with a DER walk
//! small enough to check by eye (tag, length, value; the long forms of a
//! length up to four bytes) that refuses anything it does not expect.
//! Pure, and fuzzed.

/// The OID of commonName, as DER content.
const CN: &[u8] = &[0x55, 0x04, 0x03];

/// One TLV: its tag, its value, and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The subject's common name: the first CN of a `Name`'s content (its
/// `RelativeDistinguishedName` sets, without the outer `SEQUENCE`), as
/// UTF8String, PrintableString or IA5String text.
pub fn common_name(subject: &[u8]) -> Option<&str> {
    let mut sets = subject;
    while !sets.is_empty() {
        let (tag, set, rest) = tlv(sets)?;
        sets = rest;
        if tag != 0x31 {
            return None;
        }
        let mut attrs = set;
        while !attrs.is_empty() {
            let (tag, attr, rest) = tlv(attrs)?;
            attrs = rest;
            if tag != 0x30 {
                return None;
            }
            let (tag, oid, value) = tlv(attr)?;
            if tag != 0x06 || oid != CN {
                continue;
            }
            let (tag, text, _) = tlv(value)?;
            return match tag {
                0x0c | 0x13 | 0x16 => std::str::from_utf8(text).ok(),
                _ => None,
            };
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Name's content: RDN sets of (OID, UTF8String).
    fn name(attrs: &[(&[u8], &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (oid, text) in attrs {
            let mut atv = vec![0x06, oid.len() as u8];
            atv.extend_from_slice(oid);
            atv.extend_from_slice(&[0x0c, text.len() as u8]);
            atv.extend_from_slice(text.as_bytes());
            let mut seq = vec![0x30, atv.len() as u8];
            seq.extend(atv);
            out.extend_from_slice(&[0x31, seq.len() as u8]);
            out.extend(seq);
        }
        out
    }

    const O: &[u8] = &[0x55, 0x04, 0x0a];

    #[test]
    fn reads_the_common_name() {
        let n = name(&[(O, "acme"), (CN, "scanner-7")]);
        assert_eq!(common_name(&n), Some("scanner-7"));
        assert_eq!(common_name(&name(&[(O, "acme")])), None);
        assert_eq!(common_name(&[]), None);
    }

    #[test]
    fn refuses_what_it_does_not_expect() {
        let n = name(&[(CN, "w1")]);
        for cut in 0..n.len() {
            assert_eq!(common_name(&n[..cut]), None, "cut at {cut}");
        }
        let mut wrong = n.clone();
        wrong[0] = 0x30;
        assert_eq!(common_name(&wrong), None);
        // Long-form lengths read; a five-byte length does not.
        assert_eq!(
            tlv(&[0x04, 0x81, 0x01, 0xaa]),
            Some((0x04, &[0xaa][..], &[][..]))
        );
        assert_eq!(tlv(&[0x04, 0x85, 0, 0, 0, 0, 1, 0]), None);
        assert_eq!(tlv(&[0x04, 0x80]), None);
    }
}

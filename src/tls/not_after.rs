//! The `notAfter` of an X.509 certificate, for `fortress_tls_cert_expiry_timestamp_seconds`.
//!
//! A minimal DER walk (Certificate → tbsCertificate → validity → notAfter) instead of a
//! crate: rustls and its pki-types do not expose validity, and an X.509 parser (such as
//! `x509-parser`, with its ASN.1 and `nom` dependencies) would be built into fortress for one
//! field of its own configured certificate. The walk only reads; anything it does not
//! expect gives `None` (the metric is then absent), never a panic.

/// Unix seconds of the certificate's `notAfter`, `None` if the DER is not as expected.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (tag, cert, _) = tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = tlv(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    // [0] EXPLICIT version, optional.
    if rest.first() == Some(&0xA0) {
        rest = tlv(rest)?.2;
    }
    // serialNumber INTEGER, signature AlgorithmIdentifier, issuer Name.
    for expected in [INTEGER, SEQUENCE, SEQUENCE] {
        let (tag, _, next) = tlv(rest)?;
        if tag != expected {
            return None;
        }
        rest = next;
    }
    let (tag, validity, _) = tlv(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _, after_not_before) = tlv(validity)?;
    let (tag, time, _) = tlv(after_not_before)?;
    parse_time(tag, time)
}

const INTEGER: u8 = 0x02;
const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// One DER element: (tag, content, what follows). Single-byte tags only (all the
/// certificate's outer structure uses them).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1F == 0x1F {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = rest.get(..n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest.get(n..)?)
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

/// `UTCTime` (`YYMMDDHHMMSSZ`, years 1950–2049) or `GeneralizedTime` (`YYYYMMDDHHMMSSZ`), the
/// two forms RFC 5280 allows, to Unix seconds.
fn parse_time(tag: u8, t: &[u8]) -> Option<i64> {
    let digits = |s: &[u8]| -> Option<u64> {
        s.iter().try_fold(0u64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
        })
    };
    let (year, rest) = match (tag, t.len()) {
        (UTC_TIME, 13) => {
            let yy = digits(t.get(..2)?)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, t.get(2..)?)
        }
        (GENERALIZED_TIME, 15) => (digits(t.get(..4)?)?, t.get(4..)?),
        _ => return None,
    };
    if rest.last() != Some(&b'Z') {
        return None;
    }
    let month = digits(rest.get(0..2)?)?;
    let day = digits(rest.get(2..4)?)?;
    let hour = digits(rest.get(4..6)?)?;
    let minute = digits(rest.get(6..8)?)?;
    let second = digits(rest.get(8..10)?)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if year < 1970 || second > 60 {
        return None;
    }
    let days = crate::store::days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    i64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_validity(days: u32) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after =
            params.not_before + std::time::Duration::from_secs(u64::from(days) * 86_400);
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        params
            .self_signed(&key)
            .unwrap_or_else(|e| panic!("{e}"))
            .der()
            .to_vec()
    }

    #[test]
    fn reads_not_after_of_a_real_certificate() {
        // 2026-01-01T00:00:00Z is 1767225600.
        assert_eq!(
            not_after(&cert_with_validity(90)),
            Some(1_767_225_600 + 90 * 86_400)
        );
        // After 2049: GeneralizedTime.
        assert_eq!(
            not_after(&cert_with_validity(365 * 30)),
            Some(1_767_225_600 + 365 * 30 * 86_400)
        );
    }

    #[test]
    fn times_and_garbage() {
        assert_eq!(parse_time(UTC_TIME, b"260101000000Z"), Some(1_767_225_600));
        assert_eq!(parse_time(UTC_TIME, b"700101000000Z"), Some(0));
        assert_eq!(
            parse_time(GENERALIZED_TIME, b"20500101000000Z"),
            Some(2_524_608_000)
        );
        assert_eq!(parse_time(UTC_TIME, b"261301000000Z"), None, "month 13");
        assert_eq!(parse_time(UTC_TIME, b"2601010000001"), None, "no Z");
        assert_eq!(parse_time(UTC_TIME, b"26010100000Z"), None, "short");
        assert_eq!(parse_time(0x04, b"260101000000Z"), None, "not a time");
        let good = cert_with_validity(1);
        for cut in 0..good.len() {
            // Never a panic, whatever is cut off; the outer length then no longer fits.
            assert_eq!(not_after(&good[..cut]), None, "cut at {cut}");
        }
        assert_eq!(not_after(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]), None);
        assert_eq!(not_after(&[]), None);
    }
}

//! Per-request token verification cost: HS256 and RS256, with and without the verified-token
//! cache. Run: `cargo bench --bench auth`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fortress::auth::cache::TokenCache;
use fortress::auth::jwt::{ClaimMap, JwtSettings, StaticKey, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header};

const SECRET: &[u8] = b"bench-secret-0123456789abcdef-0123456789";

fn settings() -> JwtSettings {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
    let rsa_pub = std::fs::read(keys.join("rsa.pub.pem")).unwrap_or_else(|e| panic!("{e}"));
    JwtSettings {
        algorithms: vec![Algorithm::HS256, Algorithm::RS256],
        issuer: "bench".into(),
        audiences: vec!["api".into()],
        leeway: Duration::from_secs(30),
        required_claims: vec!["sub".into(), "roles".into()],
        claims: ClaimMap {
            subject: "sub".into(),
            roles: "roles".into(),
            tenant: "tenant".into(),
        },
        secrets: vec![DecodingKey::from_secret(SECRET)],
        static_keys: vec![StaticKey {
            kid: None,
            family: AlgorithmFamily::Rsa,
            key: DecodingKey::from_rsa_pem(&rsa_pub).unwrap_or_else(|e| panic!("{e}")),
        }],
        jwks: None,
        max_token_bytes: 8192,
        cache_size: 10_000,
        fingerprint: 1,
    }
}

fn token(alg: Algorithm, key: &EncodingKey) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "sub": "alice", "roles": ["analyst", "viewer"], "tenant": "acme",
        "iss": "bench", "aud": "api", "iat": now, "exp": now + 3600, "jti": "j-1",
    });
    jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap_or_else(|e| panic!("{e}"))
}

fn bench(c: &mut Criterion) {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
    let rsa = std::fs::read(keys.join("rsa.pem")).unwrap_or_else(|e| panic!("{e}"));
    let hs = token(Algorithm::HS256, &EncodingKey::from_secret(SECRET));
    let rs = token(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(&rsa).unwrap_or_else(|e| panic!("{e}")),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let now = jsonwebtoken::get_current_timestamp();
    let mut group = c.benchmark_group("verify");
    for (name, tok) in [("HS256", &hs), ("RS256", &rs)] {
        for (mode, size) in [("no-cache", 0usize), ("cached", 10_000)] {
            let settings = settings();
            let cache = TokenCache::new(size);
            let auth = Verifier {
                settings: &settings,
                jwks: None,
                cache: &cache,
            };
            group.bench_function(format!("{name}/{mode}"), |b| {
                b.iter(|| {
                    let p = rt
                        .block_on(auth.verify(black_box(tok), now))
                        .unwrap_or_else(|e| panic!("{e:?}"));
                    black_box(p.subject.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! `basic_auth`: htpasswd lines in bcrypt and SHA-crypt, inline users, the challenge, stripping.

use super::gateway;
use crate::harness::{client, fetch, RawOrigin, TestDir};
use base64::Engine;

fn basic(user: &str, pass: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

#[tokio::test]
async fn basic_auth_checks_bcrypt_and_sha_crypt_lines() {
    let dir = TestDir::new();
    let bcrypt_line = bcrypt::hash("b-pass", 4)
        .expect("bcrypt")
        .replace("$2b$", "$2y$");
    let sha256 = sha_crypt::sha256_simple("five", &sha_crypt::Sha256Params::new(5000).expect("p"))
        .expect("sha256-crypt");
    let sha512 = sha_crypt::sha512_simple("six", &sha_crypt::Sha512Params::new(5000).expect("p"))
        .expect("sha512-crypt");
    let htpasswd = dir.write(
        "htpasswd",
        &format!("# users\nbea:{bcrypt_line}\n\nfive:{sha256}\nsix:{sha512}\n"),
    );
    let inline = bcrypt::hash("inline-pass", 4).expect("bcrypt");
    let origin = RawOrigin::start().await;
    let gw = gateway(
        &origin,
        &format!(
            r#"
  - name: api
    match: {{ path_prefix: / }}
    upstream: backend
    plugins:
      - basic_auth:
          realm: staff
          htpasswd_file: "{}"
          users: {{ ian: "{inline}" }}
"#,
            htpasswd.display()
        ),
        "",
    );
    let c = client();
    for (user, pass) in [
        ("bea", "b-pass"),
        ("five", "five"),
        ("six", "six"),
        ("ian", "inline-pass"),
    ] {
        let auth = basic(user, pass);
        let r = fetch(&c, "GET", &gw.url("/"), &[("authorization", &auth)]).await;
        assert_eq!(r.status, 200, "{user}");
        // Again: now from the verified-credential cache.
        let r = fetch(&c, "GET", &gw.url("/"), &[("authorization", &auth)]).await;
        assert_eq!(r.status, 200, "{user}, cached");
    }
    assert!(
        origin
            .requests()
            .iter()
            .all(|s| s.header("authorization").is_none()),
        "the password never reaches the backend"
    );
    for (why, auth) in [
        ("wrong password", basic("bea", "b-pasS")),
        ("unknown user", basic("mallory", "b-pass")),
        ("another user's password", basic("five", "six")),
        ("not basic", "Bearer abc".to_string()),
        ("not base64", "Basic ***".to_string()),
    ] {
        let r = fetch(&c, "GET", &gw.url("/"), &[("authorization", &auth)]).await;
        assert_eq!(r.status, 401, "{why}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"staff\", charset=\"UTF-8\""),
            "{why}"
        );
    }
    assert_eq!(origin.count(), 8);
}

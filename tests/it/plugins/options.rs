//! Less used keys end to end: `response_headers.add` (one more field line, global first),
//! `key_auth` `from: [cookie:NAME]`, `redirect.keep_query: false`, and the `$consumer` and
//! `$request_id` variables as the origin received them.

use super::{gateway, sha256_hex};
use crate::harness::{client, fetch, OriginReply, RawOrigin};

fn routes() -> String {
    format!(
        r#"
  - name: cookie
    match: {{ path_prefix: /cookie/ }}
    upstream: backend
    plugins:
      - key_auth:
          from: [cookie:api_key]
          consumers: [{{ name: alice, key_sha256: "{alice}" }}]
      - request_headers:
          set: {{ x-consumer: "$consumer", x-rid: "$request_id" }}
          add: {{ x-trail: "by-$consumer" }}
      - response_headers:
          set: {{ x-rid-out: "$request_id" }}
          add: {{ x-multi: "route-$route" }}
  - name: plain
    match: {{ path_prefix: /plain/ }}
    upstream: backend
    plugins:
      - request_headers: {{ set: {{ x-consumer: "[$consumer]", x-rid: "$request_id" }} }}
  - name: old
    match: {{ path_prefix: /old/ }}
    upstream: backend
    plugins:
      - redirect: {{ regex: '^/old/(.*)$', replacement: '/new/$1', keep_query: false }}
"#,
        alice = sha256_hex("alice-key"),
    )
}

#[tokio::test]
async fn cookie_keys_added_response_fields_and_request_variables() {
    let origin =
        RawOrigin::start_with(|_| OriginReply::new(200, "ok").header("x-multi", "origin")).await;
    let gw = gateway(
        &origin,
        &routes(),
        "plugins:\n  - response_headers: { add: { x-multi: global } }\n",
    );
    let c = client();

    // key_auth from a cookie only: the default header source is not read any more.
    for (why, headers) in [
        ("no cookie", vec![]),
        ("a wrong key", vec![("cookie", "theme=dark; api_key=wrong")]),
        ("the key in x-api-key", vec![("x-api-key", "alice-key")]),
    ] {
        let r = fetch(&c, "GET", &gw.url("/cookie/x"), &headers).await;
        assert_eq!(r.status, 401, "{why}");
        assert_eq!(
            r.all("x-multi"),
            ["global", "route-cookie"],
            "{why}: response_headers run on the 401 too"
        );
    }
    assert_eq!(origin.count(), 0);

    let r = fetch(
        &c,
        "GET",
        &gw.url("/cookie/a"),
        &[
            ("cookie", "theme=dark; api_key=alice-key"),
            ("x-request-id", "client-id-42"),
            ("x-trail", "from-client"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.all("x-multi"),
        ["origin", "global", "route-cookie"],
        "add appends a field line to the origin's, global plugins first"
    );
    assert_eq!(r.header("x-rid-out"), Some("client-id-42"));
    let seen = &origin.requests()[0];
    assert_eq!(
        seen.header("cookie"),
        Some("theme=dark; api_key=alice-key"),
        "a cookie key is left in place (the field carries the application's cookies)"
    );
    assert_eq!(seen.header_all("x-consumer"), ["alice"]);
    assert_eq!(
        seen.header_all("x-trail"),
        ["from-client", "by-alice"],
        "request_headers.add appends to the client's value"
    );
    assert_eq!(seen.header("x-request-id"), Some("client-id-42"));
    assert_eq!(
        seen.header("x-rid"),
        Some("client-id-42"),
        "$request_id: the client's valid id"
    );

    // A generated id: the same in $request_id, X-Request-Id upstream and on the response.
    let r = fetch(
        &c,
        "GET",
        &gw.url("/cookie/b"),
        &[("cookie", "api_key=alice-key")],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = &origin.requests()[1];
    let generated = seen.header("x-request-id").expect("an id went upstream");
    assert!(!generated.is_empty() && generated != "client-id-42");
    assert_eq!(seen.header("x-rid"), Some(generated));
    assert_eq!(r.header("x-request-id"), Some(generated));
    assert_eq!(r.header("x-rid-out"), Some(generated));

    // Without authentication, $consumer is empty.
    let r = fetch(&c, "GET", &gw.url("/plain/p"), &[("x-consumer", "forged")]).await;
    assert_eq!(r.status, 200);
    let seen = &origin.requests()[2];
    assert_eq!(seen.header_all("x-consumer"), ["[]"]);
    assert_eq!(seen.header("x-rid"), seen.header("x-request-id"));

    // keep_query: false drops the query from the new location.
    let no_follow = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = fetch(&no_follow, "GET", &gw.url("/old/a/b?x=1&y=2"), &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/new/a/b"));
    assert_eq!(origin.count(), 3, "the redirect is answered by the gateway");
}

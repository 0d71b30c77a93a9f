//! The response cache end to end (RFC 9111 shared-cache rules, RFC 5861 stale content,
//! collapsing, purge, eviction), against a scripted origin whose headers each test controls.

use crate::harness::{
    client, fetch, http_date, try_fetch, wait_until, Fetched, GatewayProcess, RawConn, Reply,
    ScriptedOrigin,
};
use bytes::Bytes;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// The site's host; the cache key starts with it and admin purges name it.
const HOST: &str = "site.test";

/// The longest any freshness test waits for an entry to go stale.
const STALE_DEADLINE: Duration = Duration::from_secs(4);

/// One caching route `cached` (`/`) in front of `origin`; `top` is the `cache:` section and
/// `route` the route's `cache:` (YAML flow mappings).
fn yaml(origin: SocketAddr, top: &str, route: &str) -> String {
    format!(
        r#"
listeners:
  - address: {{listen}}
upstreams:
  backend:
    servers: [{{ address: {origin} }}]
cache: {top}
routes:
  - name: cached
    match: {{ path_prefix: / }}
    upstream: backend
    cache: {route}
admin:
  address: {{admin}}
  # The purge tests address the site (and the admin) by name: DNS-rebinding protection
  # refuses names it is not told about.
  allowed_hosts: [{HOST}, admin]
"#
    )
}

/// A scripted origin, a gateway caching everything in front of it, and a client.
struct Site {
    origin: ScriptedOrigin,
    gw: GatewayProcess,
    http: reqwest::Client,
}

impl Site {
    /// `cache: {top}` and the route's `cache: {route}`.
    async fn start(top: &str, route: &str) -> Site {
        let origin = ScriptedOrigin::start().await;
        let gw = GatewayProcess::start(&yaml(origin.addr, top, route));
        Site {
            origin,
            gw,
            http: client(),
        }
    }

    /// Storage defaults, the route caching with its defaults.
    async fn plain() -> Site {
        Site::start("{}", "{ enabled: true }").await
    }

    async fn req(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Fetched {
        let mut h = vec![("host", HOST)];
        h.extend_from_slice(headers);
        try_fetch(&self.http, method, &self.gw.url(path), &h)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e:?}\ngateway log:\n{}", self.gw.log()))
    }

    async fn get(&self, path: &str) -> Fetched {
        self.req("GET", path, &[]).await
    }

    /// GETs `path` until `pred` holds for the answer (or `deadline` passes: panics with the
    /// last answer). Returns the first answer that satisfied it.
    async fn get_until(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        deadline: Duration,
        pred: impl Fn(&Fetched) -> bool,
    ) -> Fetched {
        let last: Mutex<Option<Fetched>> = Mutex::new(None);
        let ok = wait_until(deadline, || async {
            let r = self.req("GET", path, headers).await;
            let done = pred(&r);
            *last.lock().unwrap() = Some(r);
            done
        })
        .await;
        let r = last.into_inner().unwrap().expect("at least one answer");
        assert!(
            ok,
            "GET {path}: condition not met within {deadline:?}; last answer {} {:?} {:?}",
            r.status,
            r.headers,
            r.text()
        );
        r
    }

    /// The admin `/status` `cache` object.
    async fn stats(&self) -> Value {
        self.gw.status().await["cache"].clone()
    }

    async fn entries(&self) -> u64 {
        self.stats().await["entries"]
            .as_u64()
            .expect("cache.entries")
    }

    /// A request to the admin listener.
    async fn admin(&self, method: &str, path: &str, host: &str) -> Fetched {
        fetch(
            &self.http,
            method,
            &self.gw.admin_url(path),
            &[("host", host)],
        )
        .await
    }
}

/// A 200 `text/plain` with `Cache-Control: cc`.
fn cc(body: &str, cache_control: &str) -> Reply {
    Reply::ok(body.to_string()).header("cache-control", cache_control)
}

fn assert_cache(r: &Fetched, want: &str, what: &str) {
    assert_eq!(
        r.cache(),
        want,
        "{what}: X-Cache-Status (status {}, headers {:?})",
        r.status,
        r.headers
    );
}

/// A response the cache did not serve from a stored entry.
fn assert_not_stored(r: &Fetched, what: &str) {
    assert!(
        matches!(r.cache(), "MISS" | "BYPASS"),
        "{what}: X-Cache-Status {:?}, want MISS or BYPASS",
        r.cache()
    );
}

// ---------------------------------------------------------------------------------------------
// Freshness by each directive
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_keeps_an_entry_fresh_until_it_expires() {
    let s = Site::plain().await;
    s.origin.set("/ma", cc("v1", "max-age=1"));
    let r = s.get("/ma").await;
    assert_eq!((r.status, r.text().as_str()), (200, "v1"));
    assert_cache(&r, "MISS", "first GET");
    let r = s.get("/ma").await;
    assert_cache(&r, "HIT", "second GET within max-age");
    assert_eq!(r.text(), "v1");
    assert_eq!(
        s.origin.hits("/ma"),
        1,
        "a fresh hit must not reach the origin"
    );

    s.origin.set("/ma", cc("v2", "max-age=60"));
    let r = s
        .get_until("/ma", &[], STALE_DEADLINE, |r| r.cache() != "HIT")
        .await;
    assert_cache(&r, "EXPIRED", "first GET after max-age");
    assert_eq!(r.text(), "v2", "an expired entry is refetched");
    assert_eq!(s.origin.hits("/ma"), 2);
    let r = s.get("/ma").await;
    assert_cache(&r, "HIT", "refetched entry");
    assert_eq!(r.text(), "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s_maxage_overrides_max_age() {
    let s = Site::plain().await;
    // s-maxage=60 wins over max-age=0 in a shared cache...
    s.origin
        .set("/s-long", cc("long", "max-age=0, s-maxage=60"));
    assert_cache(&s.get("/s-long").await, "MISS", "first GET");
    assert_cache(&s.get("/s-long").await, "HIT", "s-maxage=60 over max-age=0");
    assert_eq!(s.origin.hits("/s-long"), 1);
    // ...and s-maxage=0 over max-age=60.
    s.origin
        .set("/s-zero", cc("zero", "max-age=60, s-maxage=0"));
    s.get("/s-zero").await;
    let r = s.get("/s-zero").await;
    assert_ne!(
        r.cache(),
        "HIT",
        "s-maxage=0 over max-age=60 must not be fresh"
    );
    assert_eq!(s.origin.hits("/s-zero"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_with_date_gives_the_lifetime() {
    let s = Site::plain().await;
    let now = SystemTime::now();
    s.origin.set(
        "/exp",
        Reply::ok("e1")
            .header("date", &http_date(now))
            .header("expires", &http_date(now + Duration::from_secs(2))),
    );
    assert_cache(&s.get("/exp").await, "MISS", "first GET");
    assert_cache(&s.get("/exp").await, "HIT", "before Expires");
    let r = s
        .get_until("/exp", &[], STALE_DEADLINE, |r| r.cache() != "HIT")
        .await;
    assert_cache(&r, "EXPIRED", "after Expires");
    assert_eq!(s.origin.hits("/exp"), 2);

    // An Expires at or before Date means already stale.
    s.origin.set(
        "/exp-past",
        Reply::ok("p")
            .header("date", &http_date(now))
            .header("expires", &http_date(now - Duration::from_secs(60))),
    );
    s.get("/exp-past").await;
    assert_ne!(
        s.get("/exp-past").await.cache(),
        "HIT",
        "Expires in the past"
    );
    assert_eq!(s.origin.hits("/exp-past"), 2);

    // An invalid Expires means already stale (RFC 9111 section 5.3).
    s.origin
        .set("/exp-bad", Reply::ok("b").header("expires", "not a date"));
    s.get("/exp-bad").await;
    assert_ne!(s.get("/exp-bad").await.cache(), "HIT", "invalid Expires");
    assert_eq!(s.origin.hits("/exp-bad"), 2);
}

/// RFC 9111 section 4.2.1: the lifetime is `Expires - Date`, so an origin whose clock runs an
/// hour ahead and sends `Expires` two seconds after its own `Date` gives two seconds, not an
/// hour and two seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_is_measured_from_the_origins_date() {
    let s = Site::plain().await;
    let origin_now = SystemTime::now() + Duration::from_secs(3600);
    s.origin.set(
        "/skew",
        Reply::ok("s")
            .header("date", &http_date(origin_now))
            .header("expires", &http_date(origin_now + Duration::from_secs(2))),
    );
    assert_cache(&s.get("/skew").await, "MISS", "first GET");
    let r = s
        .get_until("/skew", &[], STALE_DEADLINE, |r| r.cache() != "HIT")
        .await;
    assert_cache(&r, "EXPIRED", "two seconds after Date (origin clock)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_age_reduces_freshness() {
    let s = Site::plain().await;
    // Age equal to max-age: already stale on arrival.
    s.origin
        .set("/aged-out", cc("a", "max-age=10").header("age", "10"));
    s.get("/aged-out").await;
    let r = s.get("/aged-out").await;
    assert_ne!(
        r.cache(),
        "HIT",
        "max-age=10 with Age: 10 is stale on arrival"
    );
    assert_eq!(s.origin.hits("/aged-out"), 2);

    // Age below max-age: fresh for the rest, then stale (max-age=3, Age: 2 -> about 1 s).
    s.origin
        .set("/aged", cc("b", "max-age=3").header("age", "2"));
    let first = Instant::now();
    s.get("/aged").await;
    assert_cache(&s.get("/aged").await, "HIT", "Age below max-age");
    let r = s
        .get_until("/aged", &[], STALE_DEADLINE, |r| r.cache() != "HIT")
        .await;
    assert_ne!(r.cache(), "HIT");
    assert!(
        first.elapsed() < Duration::from_millis(2500),
        "stale only after {:?}: the origin's Age (2 of max-age 3) was not subtracted",
        first.elapsed()
    );
}

/// `Age` on hits is present, grows with residence time, and includes the origin's own `Age`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_is_present_and_increasing_on_hits() {
    let s = Site::plain().await;
    s.origin.set("/age", cc("a", "max-age=60"));
    let miss = s.get("/age").await;
    assert_cache(&miss, "MISS", "first GET");
    let hit = s.get("/age").await;
    assert_cache(&hit, "HIT", "second GET");
    let age0: u64 = hit
        .header("age")
        .expect("a hit carries Age")
        .parse()
        .expect("Age is a number");
    let r = s
        .get_until("/age", &[], Duration::from_secs(3), |r| {
            r.header("age")
                .and_then(|a| a.parse::<u64>().ok())
                .is_some_and(|a| a > age0)
        })
        .await;
    assert_cache(&r, "HIT", "later hit");

    // The origin says the response is already 30 s old: every hit is at least that old.
    s.origin
        .set("/age-30", cc("b", "max-age=600").header("age", "30"));
    s.get("/age-30").await;
    let hit = s.get("/age-30").await;
    assert_cache(&hit, "HIT", "second GET");
    let age: u64 = hit
        .header("age")
        .and_then(|a| a.parse().ok())
        .expect("a hit carries a numeric Age");
    assert!(
        age >= 30,
        "hit Age {age}: the origin's Age: 30 is part of the response's age (RFC 9111 4.2.3)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_revalidates_every_time() {
    let s = Site::plain().await;
    s.origin.set(
        "/nc",
        cc("body", "no-cache")
            .header("etag", "\"nc1\"")
            .answer_304(),
    );
    assert_eq!(s.get("/nc").await.text(), "body");
    for i in 2..=4 {
        let r = s.get("/nc").await;
        assert_eq!((r.status, r.text().as_str()), (200, "body"), "GET {i}");
        assert_eq!(s.origin.hits("/nc"), i, "GET {i} must reach the origin");
        let seen = s.origin.last("/nc").unwrap();
        assert_eq!(
            seen.header("if-none-match"),
            Some("\"nc1\""),
            "GET {i} is a revalidation"
        );
        assert_cache(&r, "REVALIDATED", &format!("GET {i}"));
    }
    // Without a validator, no-cache means a full fetch every time.
    s.origin.set("/nc-bare", cc("bare", "no-cache"));
    for i in 1..=3 {
        let r = s.get("/nc-bare").await;
        assert_ne!(r.cache(), "HIT", "GET {i}");
        assert_eq!(s.origin.hits("/nc-bare"), i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_and_private_are_never_stored() {
    let s = Site::plain().await;
    for (path, directive) in [
        ("/ns", "no-store, max-age=60"),
        ("/priv", "private, max-age=60"),
        ("/priv-s", "private, s-maxage=60"),
        ("/ns-pub", "public, no-store, max-age=60"),
    ] {
        s.origin.set(path, cc(path, directive));
        for i in 1..=3 {
            let r = s.get(path).await;
            assert_eq!(r.text(), path);
            assert_not_stored(&r, &format!("{directive}: GET {i}"));
            assert_eq!(
                s.origin.hits(path),
                i,
                "{directive}: GET {i} reaches the origin"
            );
        }
    }
    assert_eq!(s.entries().await, 0, "nothing stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_requests_are_cached_only_when_the_origin_allows() {
    let s = Site::plain().await;
    let auth = [("authorization", "Bearer secret-1")];
    s.origin.set("/auth", cc("mine", "max-age=60"));
    for i in 1..=2 {
        let r = s.req("GET", "/auth", &auth).await;
        assert_not_stored(&r, &format!("max-age only, GET {i}"));
    }
    assert_eq!(s.origin.hits("/auth"), 2, "max-age alone: not stored");
    // Another user must not get it either.
    assert_not_stored(&s.get("/auth").await, "unauthenticated GET after");

    for (path, directive) in [
        ("/auth-public", "public, max-age=60"),
        ("/auth-smax", "s-maxage=60"),
        ("/auth-mr", "max-age=60, must-revalidate"),
    ] {
        s.origin.set(path, cc(path, directive));
        assert_cache(&s.req("GET", path, &auth).await, "MISS", directive);
        let r = s.req("GET", path, &auth).await;
        assert_cache(&r, "HIT", directive);
        assert_eq!(r.text(), path);
        assert_eq!(s.origin.hits(path), 1, "{directive}: stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_ttl_applies_only_to_a_200_with_a_validator() {
    let origin = ScriptedOrigin::start().await;
    let gw = GatewayProcess::start(&format!(
        r#"
listeners:
  - address: {{listen}}
upstreams:
  backend:
    servers: [{{ address: {up} }}]
routes:
  - name: no-heuristic
    match: {{ path_prefix: /zero/ }}
    upstream: backend
    cache: {{ enabled: true }}
  - name: heuristic
    match: {{ path_prefix: / }}
    upstream: backend
    cache: {{ enabled: true, default_ttl_seconds: 60 }}
"#,
        up = origin.addr
    ));
    let s = Site {
        origin,
        gw,
        http: client(),
    };
    let lm = http_date(SystemTime::now() - Duration::from_secs(86_400));
    s.origin
        .set("/etag", Reply::ok("e").header("etag", "\"e1\""));
    s.origin
        .set("/lm", Reply::ok("l").header("last-modified", &lm));
    s.origin.set("/bare", Reply::ok("b"));
    s.origin.set(
        "/etag-404",
        Reply::status(404, "gone").header("etag", "\"g\""),
    );
    s.origin
        .set("/zero/etag", Reply::ok("z").header("etag", "\"z1\""));
    for (path, stored) in [
        ("/etag", true),
        ("/lm", true),
        ("/bare", false),
        ("/etag-404", false),
        ("/zero/etag", false),
    ] {
        let first = s.get(path).await;
        assert!(
            matches!(first.cache(), "MISS" | "BYPASS"),
            "{path}: first GET {:?}",
            first.cache()
        );
        let second = s.get(path).await;
        if stored {
            assert_cache(&second, "HIT", &format!("{path}: heuristic freshness"));
            assert_eq!(s.origin.hits(path), 1, "{path}");
        } else {
            assert_ne!(second.cache(), "HIT", "{path}: no heuristic freshness");
            assert_eq!(s.origin.hits(path), 2, "{path}: both GETs reach the origin");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_cookie_responses_are_stored_only_when_public() {
    let s = Site::plain().await;
    s.origin.set(
        "/cookie",
        cc("c", "max-age=60").header("set-cookie", "session=abc; Path=/"),
    );
    for i in 1..=2 {
        assert_not_stored(&s.get("/cookie").await, &format!("GET {i}"));
    }
    assert_eq!(
        s.origin.hits("/cookie"),
        2,
        "a Set-Cookie response is not stored"
    );

    s.origin.set(
        "/cookie-pub",
        cc("p", "public, max-age=60").header("set-cookie", "theme=dark; Path=/"),
    );
    assert_cache(
        &s.get("/cookie-pub").await,
        "MISS",
        "public Set-Cookie, first",
    );
    assert_cache(
        &s.get("/cookie-pub").await,
        "HIT",
        "public Set-Cookie, second",
    );
    assert_eq!(s.origin.hits("/cookie-pub"), 1);
}

// ---------------------------------------------------------------------------------------------
// Vary
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keys_entries_by_the_varied_request_headers() {
    let s = Site::plain().await;
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    let vary = |body: &str| cc(body, "max-age=60").header("vary", "Accept-Language");
    s.origin.set("/v", vary("hello"));
    assert_cache(&s.req("GET", "/v", &en).await, "MISS", "en, first");
    s.origin.set("/v", vary("bonjour"));
    let r = s.req("GET", "/v", &fr).await;
    assert_cache(&r, "MISS", "fr, first");
    assert_eq!(r.text(), "bonjour");
    assert_eq!(s.origin.hits("/v"), 2);
    for _ in 0..2 {
        let r = s.req("GET", "/v", &en).await;
        assert_cache(&r, "HIT", "en again");
        assert_eq!(r.text(), "hello", "en gets the en variant");
        let r = s.req("GET", "/v", &fr).await;
        assert_cache(&r, "HIT", "fr again");
        assert_eq!(r.text(), "bonjour", "fr gets the fr variant");
    }
    // A third value is a third variant.
    s.origin.set("/v", vary("hallo"));
    let r = s.req("GET", "/v", &[("accept-language", "de")]).await;
    assert_cache(&r, "MISS", "de");
    assert_eq!(r.text(), "hallo");
    assert_eq!(s.origin.hits("/v"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_headers_key_entries_by_every_value_and_by_absence() {
    let s = Site::start(
        "{}",
        "{ enabled: true, key: { include_headers: [x-tenant] } }",
    )
    .await;
    s.origin.set("/t", cc("t", "max-age=60"));
    let get = |h: &'static [(&'static str, &'static str)]| s.req("GET", "/t", h);
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("x-tenant", "a")], "a"),
        (&[("x-tenant", "b")], "b"),
        (&[], "absent"),
        (&[("x-tenant", "")], "empty"),
        (
            &[("x-tenant", "a"), ("x-tenant", "b")],
            "a and b on two lines",
        ),
    ];
    for (headers, what) in cases {
        assert_cache(
            &get(headers).await,
            "MISS",
            &format!("first GET, tenant {what}"),
        );
        assert_cache(
            &get(headers).await,
            "HIT",
            &format!("second GET, tenant {what}"),
        );
    }
    assert_eq!(
        s.origin.hits("/t"),
        cases.len(),
        "one entry per distinct value"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_star_is_never_served_from_cache() {
    let s = Site::plain().await;
    s.origin
        .set("/vs", cc("star", "max-age=60").header("vary", "*"));
    s.origin.set(
        "/vs-list",
        cc("star2", "max-age=60").header("vary", "Accept-Language, *"),
    );
    for path in ["/vs", "/vs-list"] {
        for i in 1..=3 {
            let r = s.get(path).await;
            assert_not_stored(&r, &format!("{path} GET {i}"));
            assert_eq!(s.origin.hits(path), i);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Revalidation and conditional requests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_is_revalidated_with_a_304_and_its_headers_updated() {
    let s = Site::plain().await;
    s.origin.set(
        "/rv",
        cc("stored body", "max-age=1")
            .header("etag", "\"rv1\"")
            .header("x-version", "1")
            .answer_304(),
    );
    let r = s.get("/rv").await;
    assert_cache(&r, "MISS", "first GET");
    assert_eq!(r.header("x-version"), Some("1"));

    // The origin still has rv1; its 304 brings a new lifetime and a new header.
    s.origin.set(
        "/rv",
        cc("must not be sent", "max-age=60")
            .header("etag", "\"rv1\"")
            .header("x-version", "2")
            .answer_304(),
    );
    let r = s
        .get_until("/rv", &[], STALE_DEADLINE, |r| r.cache() != "HIT")
        .await;
    assert_eq!(r.status, 200, "the client gets the stored 200");
    assert_cache(&r, "REVALIDATED", "after max-age");
    assert_eq!(r.text(), "stored body");
    assert_eq!(
        r.header("x-version"),
        Some("2"),
        "headers updated from the 304"
    );
    assert_eq!(r.header("cache-control"), Some("max-age=60"));
    assert_eq!(s.origin.hits("/rv"), 2);
    let seen = s.origin.last("/rv").unwrap();
    assert_eq!(seen.header("if-none-match"), Some("\"rv1\""));

    // The updated entry is fresh again, with the updated headers.
    let r = s.get("/rv").await;
    assert_cache(&r, "HIT", "after the 304");
    assert_eq!(r.text(), "stored body");
    assert_eq!(r.header("x-version"), Some("2"));
    assert_eq!(s.origin.hits("/rv"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_entry_with_last_modified_is_revalidated_with_if_modified_since() {
    let s = Site::plain().await;
    let lm = http_date(SystemTime::now() - Duration::from_secs(3600));
    let reply =
        |cc_value: &str, body: &str| cc(body, cc_value).header("last-modified", &lm).answer_304();
    s.origin.set("/ims", reply("max-age=1", "old body"));
    s.get("/ims").await;
    s.origin
        .set("/ims", reply("max-age=60", "must not be sent"));
    let r = s
        .get_until("/ims", &[], STALE_DEADLINE, |r| r.cache() != "HIT")
        .await;
    assert_cache(&r, "REVALIDATED", "after max-age");
    assert_eq!(r.text(), "old body");
    let seen = s.origin.last("/ims").unwrap();
    assert_eq!(seen.header("if-modified-since"), Some(lm.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_origin_answers_revalidation_with_a_new_200() {
    let s = Site::plain().await;
    s.origin.set(
        "/chg",
        cc("v1", "max-age=1").header("etag", "\"c1\"").answer_304(),
    );
    s.get("/chg").await;
    s.origin.set(
        "/chg",
        cc("v2", "max-age=60").header("etag", "\"c2\"").answer_304(),
    );
    let r = s
        .get_until("/chg", &[], STALE_DEADLINE, |r| r.cache() != "HIT")
        .await;
    assert_eq!(r.text(), "v2");
    assert_eq!(r.header("etag"), Some("\"c2\""));
    assert_cache(&r, "EXPIRED", "revalidation answered with a new 200");
    let r = s.get("/chg").await;
    assert_cache(&r, "HIT", "new entry");
    assert_eq!(r.text(), "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_conditional_request_is_answered_with_304_from_cache() {
    let s = Site::plain().await;
    let lm = http_date(SystemTime::now() - Duration::from_secs(3600));
    s.origin.set(
        "/cond",
        cc("conditional body", "max-age=60")
            .header("etag", "\"k1\"")
            .header("last-modified", &lm),
    );
    assert_cache(&s.get("/cond").await, "MISS", "fill");
    let r = s.req("GET", "/cond", &[("if-none-match", "\"k1\"")]).await;
    assert_eq!(r.status, 304, "matching If-None-Match");
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some("\"k1\""));
    let r = s
        .req("GET", "/cond", &[("if-none-match", "\"other\", \"k1\"")])
        .await;
    assert_eq!(r.status, 304, "If-None-Match list containing the tag");
    let r = s
        .req("GET", "/cond", &[("if-modified-since", lm.as_str())])
        .await;
    assert_eq!(r.status, 304, "If-Modified-Since equal to Last-Modified");
    let r = s
        .req("GET", "/cond", &[("if-none-match", "\"other\"")])
        .await;
    assert_eq!(r.status, 200, "non-matching If-None-Match");
    assert_eq!(r.text(), "conditional body");
    assert_eq!(s.origin.hits("/cond"), 1, "all answered from cache");
}

// ---------------------------------------------------------------------------------------------
// Methods and invalidation
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_is_served_from_a_cached_get() {
    let s = Site::plain().await;
    s.origin.set("/head", cc("0123456789", "max-age=60"));
    let get = s.get("/head").await;
    assert_cache(&get, "MISS", "GET");
    let head = s.req("HEAD", "/head", &[]).await;
    assert_eq!(head.status, 200);
    assert_cache(&head, "HIT", "HEAD after a cached GET");
    assert!(head.body.is_empty(), "HEAD has no body");
    assert_eq!(head.header("cache-control"), Some("max-age=60"));
    if let Some(len) = head.header("content-length") {
        assert_eq!(len, "10", "HEAD's Content-Length is the GET body's");
    }
    assert_eq!(s.origin.hits("/head"), 1);
    assert!(
        s.origin.requests().iter().all(|r| r.method == "GET"),
        "the origin never saw the HEAD"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_requests_are_cut_from_the_cached_body() {
    let s = Site::plain().await;
    s.origin.set("/range", cc("0123456789", "max-age=60"));
    assert_cache(&s.get("/range").await, "MISS", "GET");

    let r = s.req("GET", "/range", &[("range", "bytes=2-5")]).await;
    assert_eq!(r.status, 206, "a single range");
    assert_cache(&r, "HIT", "range");
    assert_eq!(r.text(), "2345");
    assert_eq!(r.header("content-range"), Some("bytes 2-5/10"));

    // An end past the body is cut to it; a suffix range counts from the end.
    let r = s.req("GET", "/range", &[("range", "bytes=7-100")]).await;
    assert_eq!((r.status, r.text()), (206, "789".to_string()));
    let r = s.req("GET", "/range", &[("range", "bytes=-3")]).await;
    assert_eq!((r.status, r.text()), (206, "789".to_string()));

    // Several ranges: one multipart/byteranges answer, each part cut from the stored body.
    let r = s.req("GET", "/range", &[("range", "bytes=0-1,8-9")]).await;
    assert_eq!(r.status, 206, "two ranges");
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("multipart/byteranges")),
        "multipart answer: {:?}",
        r.headers
    );
    let body = r.text();
    for part in [
        "Content-Range: bytes 0-1/10\r\n\r\n01\r\n",
        "Content-Range: bytes 8-9/10\r\n\r\n89\r\n",
    ] {
        assert!(body.contains(part), "part {part:?} in {body:?}");
    }

    // A range that starts past the body cannot be served.
    let r = s.req("GET", "/range", &[("range", "bytes=50-60")]).await;
    assert_eq!(r.status, 416, "unsatisfiable range");

    // The stored body is unchanged by the ranges cut from it.
    let r = s.get("/range").await;
    assert_cache(&r, "HIT", "full GET after ranges");
    assert_eq!((r.status, r.text()), (200, "0123456789".to_string()));
    assert_eq!(s.origin.hits("/range"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_get_and_head_are_served_from_cache() {
    let s = Site::plain().await;
    s.origin.set("/m", cc("resource", "max-age=60"));
    s.origin.set("POST /m", Reply::status(400, "rejected"));
    s.origin.set("OPTIONS /m", Reply::status(204, ""));
    s.get("/m").await;
    assert_cache(&s.get("/m").await, "HIT", "GET");
    for method in ["POST", "OPTIONS"] {
        let r = s.req(method, "/m", &[]).await;
        assert_cache(&r, "BYPASS", method);
        assert_ne!(
            r.text(),
            "resource",
            "{method} is not answered from the cache"
        );
        assert_eq!(
            s.origin.last("/m").unwrap().method,
            method,
            "{method} reached the origin"
        );
    }
    // Neither failed nor safe methods invalidated anything.
    assert_cache(&s.get("/m").await, "HIT", "GET after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_unsafe_methods_invalidate_the_url_and_locations() {
    let s = Site::plain().await;
    for p in ["/i", "/loc", "/cloc", "/abs", "/elsewhere", "/keep"] {
        s.origin.set(p, cc(&format!("{p} v1"), "max-age=60"));
        s.get(p).await;
        assert_cache(&s.get(p).await, "HIT", p);
    }
    s.origin.set(
        "POST /i",
        Reply::status(201, "created")
            .header("location", "/loc")
            .header("content-location", "/cloc"),
    );
    let r = s.req("POST", "/i", &[]).await;
    assert_eq!(r.status, 201);
    assert_cache(&r, "BYPASS", "POST");
    for p in ["/i", "/loc", "/cloc"] {
        s.origin.set(p, cc(&format!("{p} v2"), "max-age=60"));
        let r = s.get(p).await;
        assert_cache(&r, "MISS", &format!("{p} after the POST"));
        assert_eq!(r.text(), format!("{p} v2"));
    }

    // PUT, DELETE and an absolute same-host Location; another host's Location is not ours.
    s.origin.set(
        "PUT /keep",
        Reply::status(200, "put")
            .header("location", &format!("http://{HOST}/abs"))
            .header("content-location", "http://other.test/elsewhere"),
    );
    s.req("PUT", "/keep", &[]).await;
    assert_cache(&s.get("/keep").await, "MISS", "/keep after PUT");
    assert_cache(&s.get("/abs").await, "MISS", "/abs (same-host Location)");
    assert_cache(&s.get("/elsewhere").await, "HIT", "/elsewhere (other host)");
    s.origin.set("DELETE /keep", Reply::status(204, ""));
    s.req("DELETE", "/keep", &[]).await;
    assert_cache(&s.get("/keep").await, "MISS", "/keep after DELETE");

    // A failed unsafe request invalidates nothing.
    s.origin.set("POST /elsewhere", Reply::status(500, "boom"));
    s.req("POST", "/elsewhere", &[]).await;
    assert_cache(&s.get("/elsewhere").await, "HIT", "after a failed POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_request_invalidates_an_ignore_query_entry() {
    let s = Site::start("{}", "{ enabled: true, key: { ignore_query: true } }").await;
    s.origin.set("/q", cc("q v1", "max-age=60"));
    assert_cache(&s.get("/q?a=1").await, "MISS", "first GET");
    assert_cache(
        &s.get("/q?b=2").await,
        "HIT",
        "another query, the same entry",
    );
    s.origin.set("POST /q", Reply::status(201, "created"));
    assert_eq!(s.req("POST", "/q?a=1", &[]).await.status, 201);
    s.origin.set("/q", cc("q v2", "max-age=60"));
    let r = s.get("/q?c=3").await;
    assert_cache(&r, "MISS", "after the POST");
    assert_eq!(r.text(), "q v2");
}

// ---------------------------------------------------------------------------------------------
// Stale content (RFC 5861)
// ---------------------------------------------------------------------------------------------

/// Fills `path` with v1 (lifetime 1 s), scripts a slow v2, and checks: the first request after
/// expiry gets v1 at once (STALE), a background request reaches the origin, and later requests
/// get v2 from the cache.
async fn check_stale_while_revalidate(s: &Site, path: &str) {
    assert_cache(&s.get(path).await, "MISS", "fill");
    s.origin.set(
        path,
        cc("v2", "max-age=60").delay(Duration::from_millis(1500)),
    );
    let r = s
        .get_until(path, &[], STALE_DEADLINE, |r| r.cache() != "HIT")
        .await;
    assert_cache(&r, "STALE", "first GET after expiry");
    assert_eq!(r.text(), "v1", "the stale copy is served");
    assert!(
        r.elapsed < Duration::from_millis(1000),
        "the stale answer took {:?}: it waited for the (1.5 s) refresh",
        r.elapsed
    );
    assert!(
        wait_until(Duration::from_secs(3), || async {
            s.origin.hits(path) >= 2
        })
        .await,
        "the background refresh never reached the origin"
    );
    let r = s
        .get_until(path, &[], Duration::from_secs(5), |r| r.text() == "v2")
        .await;
    assert!(
        matches!(r.cache(), "HIT" | "STALE"),
        "refreshed entry served as {:?}",
        r.cache()
    );
    let r = s.get(path).await;
    assert_cache(&r, "HIT", "after the refresh");
    assert_eq!(r.text(), "v2");
    assert_eq!(s.origin.hits(path), 2, "one background refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_from_the_origin() {
    let s = Site::plain().await;
    s.origin
        .set("/swr", cc("v1", "max-age=1, stale-while-revalidate=30"));
    check_stale_while_revalidate(&s, "/swr").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_from_the_route() {
    let s = Site::start(
        "{}",
        "{ enabled: true, stale_while_revalidate_seconds: 30 }",
    )
    .await;
    s.origin.set("/swr-route", cc("v1", "max-age=1"));
    check_stale_while_revalidate(&s, "/swr-route").await;
}

/// Fills `/sie-500` and `/sie-down` with `v1`, waits for them to expire, and checks that an
/// origin answering 500, then an origin that is gone, gets the stale copy served.
async fn check_stale_if_error(s: Site, v1: Reply) {
    for p in ["/sie-500", "/sie-down"] {
        s.origin.set(p, v1.clone());
        assert_cache(&s.get(p).await, "MISS", p);
    }
    s.origin.set("/sie-500", Reply::status(500, "origin error"));
    let r = s
        .get_until("/sie-500", &[], STALE_DEADLINE, |r| r.cache() != "HIT")
        .await;
    assert_eq!(
        r.status, 200,
        "a 500 from the origin is hidden by the stale copy"
    );
    assert_eq!(r.text(), "v1");
    assert_cache(&r, "STALE", "origin answering 500");
    assert_eq!(s.origin.hits("/sie-500"), 2);

    // The origin goes away. Raw connections, so that what the gateway does with the
    // connection after a stale answer is seen exactly.
    s.origin.shut_down().await;
    // `/sie-down` was filled a moment after `/sie-500`, so on a loaded machine it can still
    // be fresh here; wait for it to expire before counting on STALE.
    let r = s
        .get_until("/sie-down", &[], STALE_DEADLINE, |r| r.cache() != "HIT")
        .await;
    assert_eq!(r.status, 200, "origin down: stale served");
    assert_cache(&r, "STALE", "origin down");
    let request = format!("GET /sie-down HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let mut conn = RawConn::connect(s.gw.addr).await;
    for i in 0..3 {
        conn.send(request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("request {i}: send: {e}"));
        let r = conn
            .read_response(Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "origin down, request {i} on a connection the gateway kept alive: {e}\n\
                     gateway log:\n{}",
                    s.gw.log()
                )
            });
        assert_eq!(r.status, 200, "origin down, request {i}: stale served");
        assert_eq!(r.body, b"v1");
        assert_eq!(r.header("x-cache-status"), Some("STALE"), "request {i}");
        if r.header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            conn = RawConn::connect(s.gw.addr).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_from_the_origin() {
    let s = Site::plain().await;
    check_stale_if_error(s, cc("v1", "max-age=1, stale-if-error=60")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_from_the_route() {
    let s = Site::start("{}", "{ enabled: true, stale_if_error_seconds: 60 }").await;
    check_stale_if_error(s, cc("v1", "max-age=1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_revalidate_forbids_serving_stale_on_error() {
    let s = Site::start("{}", "{ enabled: true, stale_if_error_seconds: 60 }").await;
    s.origin.set("/mr", cc("v1", "max-age=1, must-revalidate"));
    s.get("/mr").await;
    s.origin.set("/mr", Reply::status(500, "origin error"));
    let r = s
        .get_until("/mr", &[], STALE_DEADLINE, |r| r.cache() != "HIT")
        .await;
    assert_ne!(
        r.text(),
        "v1",
        "must-revalidate: a stale copy is never served"
    );
    assert!(r.status >= 500, "the error is passed on, got {}", r.status);
}

// ---------------------------------------------------------------------------------------------
// Collapsing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_misses_send_one_upstream_request() {
    let s = Arc::new(Site::plain().await);
    s.origin.set(
        "/collapse",
        cc("collapsed", "max-age=60").delay(Duration::from_millis(300)),
    );
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.get("/collapse").await }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let r = t.await.expect("request task");
        assert_eq!((r.status, r.text().as_str()), (200, "collapsed"));
        statuses.push(r.cache().to_string());
    }
    assert_eq!(
        s.origin.hits("/collapse"),
        1,
        "50 concurrent misses must reach the origin once (statuses {statuses:?})"
    );
    assert_eq!(statuses.iter().filter(|c| *c == "MISS").count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Purge
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_works_on_the_admin_listener_only() {
    let s = Site::plain().await;
    for p in ["/pg", "/pre/a", "/pre/b", "/other", "/by-url"] {
        s.origin.set(p, cc(p, "max-age=60"));
        s.get(p).await;
        assert_cache(&s.get(p).await, "HIT", p);
    }
    assert_eq!(s.entries().await, 5);

    // Refused on the public listener.
    let r = s.req("PURGE", "/pg", &[]).await;
    assert_eq!(r.status, 405, "PURGE on the public listener");
    assert_cache(&s.get("/pg").await, "HIT", "after the refused PURGE");
    let r = s.req("DELETE", "/cache", &[]).await;
    assert_ne!(
        r.status, 200,
        "DELETE /cache on the public listener is not a purge"
    );
    assert_cache(&s.get("/pg").await, "HIT", "after the public DELETE");

    // PURGE /path on the admin listener.
    let r = s.admin("PURGE", "/pg", HOST).await;
    assert_eq!(r.status, 200, "admin PURGE: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body).expect("purge answers JSON");
    assert_eq!(v["purged"], 1);
    assert_cache(&s.get("/pg").await, "MISS", "after the admin PURGE");
    assert_eq!(s.origin.hits("/pg"), 2);
    let r = s.admin("PURGE", "/not-cached", HOST).await;
    assert_eq!(r.status, 404, "purging nothing");

    // DELETE /cache?url=
    let r = s
        .admin(
            "DELETE",
            &format!("/cache?url=http://{HOST}/by-url"),
            "admin",
        )
        .await;
    assert_eq!(r.status, 200, "DELETE ?url=: {}", r.text());
    assert_cache(&s.get("/by-url").await, "MISS", "after DELETE ?url=");

    // DELETE /cache?prefix=
    let r = s.admin("DELETE", "/cache?prefix=/pre/", "admin").await;
    assert_eq!(r.status, 200, "DELETE ?prefix=: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(v["purged"], 2);
    assert_cache(&s.get("/pre/a").await, "MISS", "/pre/a after prefix purge");
    assert_cache(&s.get("/pre/b").await, "MISS", "/pre/b after prefix purge");
    assert_cache(
        &s.get("/other").await,
        "HIT",
        "/other survives the prefix purge",
    );

    // DELETE /cache: everything.
    let r = s.admin("DELETE", "/cache", "admin").await;
    assert_eq!(r.status, 200, "DELETE /cache: {}", r.text());
    assert!(
        wait_until(Duration::from_secs(2), || async { s.entries().await == 0 }).await,
        "entries after purging all: {}",
        s.stats().await
    );
    for p in ["/pg", "/pre/a", "/other", "/by-url"] {
        assert_cache(&s.get(p).await, "MISS", &format!("{p} after purging all"));
    }
}

// ---------------------------------------------------------------------------------------------
// Storage bounds
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_evicted_beyond_max_size() {
    let s = Site::start("{ max_size: 10 }", "{ enabled: true }").await;
    s.origin.set_fallback(cc("entry", "max-age=300"));
    for i in 0..30 {
        let r = s.get(&format!("/e/{i}")).await;
        assert_eq!(r.status, 200);
    }
    let ok = wait_until(Duration::from_secs(3), || async {
        let st = s.stats().await;
        st["entries"].as_u64().unwrap_or(u64::MAX) <= 10
            && st["evictions"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let st = s.stats().await;
    assert!(ok, "max_size 10 after 30 entries: {st}");
    assert!(st["evictions"].as_u64().unwrap() >= 20, "{st}");
    // The evicted entries really are gone: at most 10 of the 30 are still hits.
    let mut hits = 0;
    for i in 0..30 {
        if s.get(&format!("/e/{i}")).await.cache() == "HIT" {
            hits += 1;
        }
    }
    assert!(hits <= 10, "{hits} of 30 entries still served from cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_evicted_beyond_max_bytes() {
    const BUDGET: u64 = 64 * 1024;
    let s = Site::start(&format!("{{ max_bytes: {BUDGET} }}"), "{ enabled: true }").await;
    s.origin
        .set_fallback(Reply::ok(vec![b'x'; 8 * 1024]).header("cache-control", "max-age=300"));
    for i in 0..30 {
        let r = s.get(&format!("/b/{i}")).await;
        assert_eq!(r.body.len(), 8 * 1024);
    }
    let ok = wait_until(Duration::from_secs(3), || async {
        let st = s.stats().await;
        st["bytes"].as_u64().unwrap_or(u64::MAX) <= BUDGET
            && st["evictions"].as_u64().unwrap_or(0) > 0
    })
    .await;
    let st = s.stats().await;
    assert!(ok, "max_bytes {BUDGET} after 30 x 8 KiB: {st}");
    let entries = st["entries"].as_u64().unwrap();
    assert!(
        (1..=8).contains(&entries),
        "{entries} entries of 8 KiB within {BUDGET} bytes: {st}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_above_max_object_bytes_passes_through_uncached_and_streamed() {
    const LIMIT: usize = 100_000;
    let s = Site::start(
        &format!("{{ max_object_bytes: {LIMIT} }}"),
        "{ enabled: true }",
    )
    .await;
    let chunk: Vec<u8> = (0..64 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let chunks: Vec<Bytes> = (0..16).map(|_| Bytes::from(chunk.clone())).collect();
    let total = chunks.iter().map(|c| c.len()).sum::<usize>();
    let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();

    // Known length, larger than the limit.
    s.origin.set(
        "/big-len",
        Reply::ok(expected.clone()).header("cache-control", "max-age=60"),
    );
    // Unknown length (chunked), the last chunk held back until the client has the first bytes.
    let (chunked, gate) = Reply::ok(Bytes::new())
        .header("cache-control", "max-age=60")
        .chunks(chunks.clone(), Duration::ZERO)
        .hold_last_chunk();
    s.origin.set("/big-chunked", chunked);

    for i in 1..=2 {
        let r = s.get("/big-len").await;
        assert_eq!(r.body.len(), total, "/big-len GET {i}: complete");
        assert!(r.body == expected, "/big-len GET {i}: bytes intact");
        assert_not_stored(&r, &format!("/big-len GET {i}"));
    }
    assert_eq!(s.origin.hits("/big-len"), 2, "not stored");

    for i in 1..=2 {
        let mut resp = s
            .http
            .get(s.gw.url("/big-chunked"))
            .header("host", HOST)
            .send()
            .await
            .expect("GET /big-chunked");
        assert!(
            matches!(
                resp.headers()
                    .get("x-cache-status")
                    .and_then(|v| v.to_str().ok()),
                Some("MISS" | "BYPASS")
            ),
            "GET {i}: {:?}",
            resp.headers()
        );
        let mut got = Vec::new();
        // Everything but the held-back chunk arrives while the origin is still sending.
        let early = total - chunk.len();
        let streamed = tokio::time::timeout(Duration::from_secs(5), async {
            while got.len() < early {
                match resp.chunk().await.unwrap_or_else(|e| {
                    panic!(
                        "GET {i}: body cut after {} bytes: {e}\ngateway log:\n{}",
                        got.len(),
                        s.gw.log()
                    )
                }) {
                    Some(c) => got.extend_from_slice(&c),
                    None => break,
                }
            }
        })
        .await;
        assert!(
            streamed.is_ok() && got.len() >= early,
            "GET {i}: only {} of {early} bytes arrived before the origin finished: buffered",
            got.len()
        );
        gate.add_permits(1);
        while let Some(c) = resp.chunk().await.unwrap_or_else(|e| {
            panic!(
                "GET {i}: body cut after {} bytes: {e}\ngateway log:\n{}",
                got.len(),
                s.gw.log()
            )
        }) {
            got.extend_from_slice(&c);
        }
        assert_eq!(got.len(), total, "GET {i}: complete");
        assert!(got == expected, "GET {i}: bytes intact");
    }
    assert_eq!(s.origin.hits("/big-chunked"), 2, "not stored");
    assert_eq!(s.entries().await, 0, "nothing stored: {}", s.stats().await);
}

/// 10,000 entries of 1 KiB keep the gateway under 80 MB resident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_one_kib_entries_stay_under_80_mb() {
    const N: usize = 10_000;
    const WORKERS: usize = 8;
    const CEILING_KIB: u64 = 80_000_000 / 1024;
    let s = Arc::new(Site::start("{ max_size: 20000 }", "{ enabled: true }").await);
    s.origin
        .set_fallback(Reply::ok(vec![b'k'; 1024]).header("cache-control", "max-age=600"));
    // Raw keep-alive connections: the cheapest client, so the gateway gets the CPU.
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let (addr, next) = (s.gw.addr, next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = RawConn::connect(addr).await;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= N {
                    return;
                }
                let req = format!("GET /mem/{i} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
                conn.send(req.as_bytes()).await.expect("send");
                let r = conn
                    .read_response(Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|e| panic!("/mem/{i}: {e}"));
                assert_eq!((r.status, r.body.len()), (200, 1024), "/mem/{i}");
                if r.header("connection")
                    .is_some_and(|c| c.eq_ignore_ascii_case("close"))
                {
                    conn = RawConn::connect(addr).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("fill task");
    }
    eprintln!("filled {N} entries in {:?}", start.elapsed());
    assert!(
        wait_until(Duration::from_secs(5), || async {
            s.entries().await >= N as u64
        })
        .await,
        "not all entries stored: {}",
        s.stats().await
    );
    let rss = s.gw.rss_kib();
    eprintln!("gateway RSS with {N} entries: {} KiB", rss);
    assert!(rss > 0, "RSS could not be read");
    assert!(
        rss < CEILING_KIB,
        "gateway RSS {} KiB with {N} entries of 1 KiB (ceiling {CEILING_KIB} KiB)",
        rss
    );
    assert_cache(&s.get("/mem/0").await, "HIT", "first entry still stored");
    assert_eq!(s.origin.total_hits(), N, "every entry fetched once");
}

// ---------------------------------------------------------------------------------------------
// Status header and header fidelity
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_on_a_caching_route_has_x_cache_status() {
    let s = Site::plain().await;
    s.origin.set("/xs", cc("x", "max-age=60"));
    s.origin.set("/xs-none", Reply::ok("n"));
    s.origin.set("/xs-500", Reply::status(500, "err"));
    s.origin.set("POST /xs", Reply::status(400, "no"));
    assert_cache(&s.get("/xs").await, "MISS", "first GET");
    assert_cache(&s.get("/xs").await, "HIT", "second GET");
    assert_cache(&s.req("HEAD", "/xs", &[]).await, "HIT", "HEAD");
    assert_cache(&s.req("POST", "/xs", &[]).await, "BYPASS", "POST");
    assert_not_stored(&s.get("/xs-none").await, "no freshness information");
    assert_not_stored(&s.get("/xs-500").await, "a 500");
    assert_not_stored(&s.get("/unscripted-404").await, "a 404 without freshness");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_headers_pass_unchanged_on_miss_and_hit() {
    let s = Site::plain().await;
    let now = SystemTime::now();
    let expires = http_date(now + Duration::from_secs(600));
    let lm = http_date(now - Duration::from_secs(86_400));
    let e2e = [
        ("cache-control", "public, max-age=60, stale-if-error=10"),
        ("expires", expires.as_str()),
        ("etag", "\"fidelity-1\""),
        ("last-modified", lm.as_str()),
        ("content-language", "en"),
        ("x-custom", "kept as is"),
        ("link", "</style.css>; rel=preload"),
    ];
    let mut reply = Reply::status(200, "{\"a\":1}").header("content-type", "application/json");
    for (k, v) in e2e {
        reply = reply.header(k, v);
    }
    s.origin.set("/fid", reply);
    let sent = [
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("accept-language", "en-GB, en;q=0.8"),
        ("user-agent", "fidelity-test/1.0"),
        ("x-request-thing", "Some Value"),
        ("cookie", "a=1; b=2"),
    ];
    let miss = s.req("GET", "/fid", &sent).await;
    let hit = s.req("GET", "/fid", &sent).await;
    assert_cache(&miss, "MISS", "first");
    assert_cache(&hit, "HIT", "second");
    for (what, r) in [("miss", &miss), ("hit", &hit)] {
        for (k, v) in e2e {
            assert_eq!(r.all(k), vec![v], "{what}: {k}");
        }
        assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
        assert_eq!(r.text(), "{\"a\":1}", "{what}");
    }
    let seen = s.origin.last("/fid").unwrap();
    for (k, v) in sent {
        assert_eq!(
            seen.header(k),
            Some(v),
            "request header {k} forwarded unchanged"
        );
    }
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.uri, "/fid");
}

//! `mirror` (configuration.md#traffic-split-and-mirror): `percent` below 100 copies exactly the
//! documented share (request *n* when `n × 37 mod 100 < percent`), `percent: 0` none; and
//! `max_body_bytes`: a body over the cap is not copied (the copy is abandoned, counted as
//! `failed`) while the primary still gets it whole, and a body at the cap is copied.

use crate::harness::{client, fetch, metric, wait_metric, GatewayProcess, RawOrigin};
use std::collections::BTreeSet;
use std::time::Duration;

fn start(primary: &RawOrigin, shadow: &RawOrigin) -> GatewayProcess {
    GatewayProcess::start(&format!(
        r#"
listeners:
  - address: "{{listen}}"
upstreams:
  primary: {{ servers: [{{ address: "{}" }}] }}
  shadow: {{ servers: [{{ address: "{}" }}] }}
routes:
  - name: half
    match: {{ path_prefix: /half/ }}
    upstream: primary
    mirror: {{ upstream: shadow, percent: 50 }}
  - name: none
    match: {{ path_prefix: /none/ }}
    upstream: primary
    mirror: {{ upstream: shadow, percent: 0 }}
  - name: capped
    match: {{ path_prefix: /capped/ }}
    upstream: primary
    mirror: {{ upstream: shadow, max_body_bytes: 1000 }}
"#,
        primary.addr, shadow.addr
    ))
}

fn series(result: &str, route: &str) -> String {
    format!(r#"avx_mirror_requests_total{{result="{result}",route="{route}"}}"#)
}

#[tokio::test]
async fn mirror_percent_copies_exactly_its_share_spread_over_the_requests() {
    let primary = RawOrigin::start().await;
    let shadow = RawOrigin::start().await;
    let gw = start(&primary, &shadow);
    let c = client();

    for n in 0..100u64 {
        let r = fetch(&c, "GET", &gw.url(&format!("/half/{n}")), &[]).await;
        assert_eq!(r.status, 200);
    }
    for n in 0..10 {
        let r = fetch(&c, "GET", &gw.url(&format!("/none/{n}")), &[]).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(primary.count(), 110, "every real request was proxied");
    assert!(
        wait_metric(&gw, &series("sent", "half"), 50.0).await,
        "sent: {:?}; shadow: {}",
        metric(&gw, &series("sent", "half")).await,
        shadow.describe()
    );
    assert!(
        shadow.wait_for_count(50, Duration::from_secs(5)).await,
        "{}",
        shadow.describe()
    );
    let copied: BTreeSet<u64> = shadow
        .requests()
        .iter()
        .filter_map(|r| r.path().strip_prefix("/half/")?.parse().ok())
        .collect();
    let expected: BTreeSet<u64> = (0..100).filter(|n| n * 37 % 100 < 50).collect();
    assert_eq!(
        copied, expected,
        "exactly the documented half, spread over the run"
    );
    assert!(
        (0..10).any(|n| copied.contains(&n)) && (0..10).any(|n| !copied.contains(&n)),
        "the first ten requests are neither all copied nor all skipped: {copied:?}"
    );
    assert!(
        !shadow.saw_target_containing("/none/"),
        "percent: 0 copies nothing: {}",
        shadow.describe()
    );
    for result in ["sent", "dropped", "failed"] {
        assert!(
            metric(&gw, &series(result, "none")).await.unwrap_or(0.0) == 0.0,
            "percent: 0 made no copy to count as {result}"
        );
    }
    assert_eq!(shadow.count(), 50, "{}", shadow.describe());
}

#[tokio::test]
async fn mirror_max_body_bytes_abandons_a_larger_copy_and_never_the_request() {
    let primary = RawOrigin::start().await;
    let shadow = RawOrigin::start().await;
    let gw = start(&primary, &shadow);
    let c = client();

    let big = vec![b'b'; 50_000];
    let r = c
        .post(gw.url("/capped/big"))
        .body(big.clone())
        .send()
        .await
        .expect("post big");
    assert_eq!(r.status(), 200);
    assert!(
        wait_metric(&gw, &series("failed", "capped"), 1.0).await,
        "the copy over the cap is abandoned and counted: failed {:?}",
        metric(&gw, &series("failed", "capped")).await
    );
    let at_cap = vec![b's'; 1000];
    let r = c
        .post(gw.url("/capped/small"))
        .body(at_cap.clone())
        .send()
        .await
        .expect("post small");
    assert_eq!(r.status(), 200);
    assert!(
        shadow
            .wait_for_target("/capped/small", Duration::from_secs(5))
            .await,
        "{}",
        shadow.describe()
    );
    assert!(wait_metric(&gw, &series("sent", "capped"), 1.0).await);

    let seen = primary.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path(), "/capped/big");
    assert!(
        seen[0].body == big,
        "the primary got the large body whole ({} bytes)",
        seen[0].body.len()
    );
    assert!(seen[1].body == at_cap);
    let copies = shadow.requests();
    assert_eq!(
        copies.len(),
        1,
        "only the body at the cap was copied: {}",
        shadow.describe()
    );
    assert_eq!(copies[0].path(), "/capped/small");
    assert!(
        copies[0].body == at_cap,
        "copied whole: {} bytes",
        copies[0].body.len()
    );
    assert_eq!(metric(&gw, &series("failed", "capped")).await, Some(1.0));
}

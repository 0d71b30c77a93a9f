//! The `ProxyHttp` implementation. Each hook is a table-of-contents entry that hands off to a
//! module: routing, upstream selection, header forwarding, responses.

mod admission;
mod caching;
mod compressing;
mod context;
mod downstream;
mod failure;
mod forwarding;
mod framing;
mod header_names;
mod mirroring;
mod observe;
mod plugins;
mod protection;
mod request_id;
mod respond;
mod spans;
mod upgrade;

pub use context::{EffectiveHost, Rejection, RequestCtx};
use failure::Failure;
pub use header_names::{X_REQUEST_ID, X_REQUEST_ID_NAME};

use crate::plugin::ReplyKind;
use crate::reload::LiveRuntime;
use crate::routing::Action;
use crate::runtime::Runtime;
use crate::upstream::{HashKey, Upstream};
use async_trait::async_trait;
use pingora_cache::key::HashBinary;
use pingora_cache::{CacheKey, CacheMeta, NoCacheReason, RespCacheable};
use pingora_core::modules::http::compression::ResponseCompressionBuilder;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::sync::Arc;

/// The gateway's proxy logic, shared by every listener.
pub struct GatewayProxy {
    live: Arc<LiveRuntime>,
}

impl GatewayProxy {
    /// A proxy over the live runtime (each request keeps the one live when it started).
    pub fn new(live: Arc<LiveRuntime>) -> Self {
        GatewayProxy { live }
    }
}

/// The upstream the request was placed on.
fn upstream_of<'a>(rt: &'a Runtime, ctx: &RequestCtx) -> Option<&'a Arc<Upstream>> {
    ctx.upstream.map(|u| rt.upstream(u))
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.live.load())
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let rt = Arc::clone(&ctx.runtime);
        downstream::configure(session, &rt.downstream);
        spans::start(&rt, session, ctx);
        ctx.request_id = Some(request_id::resolve(
            session.req_header().headers.get(&X_REQUEST_ID),
        ));
        forwarding::identify_client(&rt, session, ctx);
        if let Err(reason) = admission::admit(session, ctx, &rt.downstream.paths) {
            ctx.refused = Some(reason);
            return Ok(());
        }
        // Routing happens here, before Pingora's compression module reads the request, because
        // the route decides whether (and how) to compress.
        ctx.route = admission::find_route(&rt, session, ctx);
        ctx.route_inflight = ctx.route.map(|r| rt.metrics.enter_route(r));
        compressing::prepare_compression(&rt, session, ctx);
        Ok(())
    }

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        // Present but off; `compressing::prepare_compression` turns it on per route. Left out
        // when no route compresses: the module costs an allocation and a call per phase.
        if self.live.compression_module() {
            modules.add_module(ResponseCompressionBuilder::enable(0));
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let rt = Arc::clone(&ctx.runtime);
        compressing::restore_accept_encoding(session, ctx);
        let r = match admission::route(&rt, session, ctx) {
            Ok(r) => r,
            Err(refusal) => {
                respond::refusal(session, ctx, refusal).await?;
                return Ok(true);
            }
        };
        let rt = &rt;
        let early = plugins::request(rt, r, plugins::Stage::BeforeLimit, session, ctx).await;
        // A refused login is charged to a per-client limit (a `consumer` key falls back to
        // the client IP), so guessing is limited; other early answers (preflights, denials)
        // never spend tokens that admitted clients share.
        let charge = early.as_ref().is_none_or(|reply| {
            reply.kind == ReplyKind::Unauthorized && protection::limits_per_client(rt, r)
        });
        if charge && protection::guard_route(rt, r, session, ctx).await? {
            return Ok(true);
        }
        let reply = match early {
            Some(reply) => Some(reply),
            None => plugins::request(rt, r, plugins::Stage::AfterLimit, session, ctx).await,
        };
        if let Some(reply) = reply {
            plugins::answer(rt, r, session, ctx, reply).await?;
            return Ok(true);
        }
        match &rt.route(r).action {
            Action::Respond(fixed) => {
                respond::fixed(rt, session, ctx, fixed).await?;
                Ok(true)
            }
            Action::Proxy { target, .. } => {
                let placed = target.place(&session.req_header().headers);
                ctx.upstream = Some(placed.upstream);
                ctx.split_cookie = placed.set_cookie.map(Box::new);
                Ok(false)
            }
        }
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let rt = Arc::clone(&ctx.runtime);
        // After the cache lookup, so an open circuit still lets cached responses through.
        let Some(up) = upstream_of(&rt, ctx) else {
            return Ok(true);
        };
        Ok(!protection::guard_upstream(up, session, ctx).await?)
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let rt = Arc::clone(&ctx.runtime);
        caching::enable(&rt, session, ctx);
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut RequestCtx) -> Result<CacheKey> {
        let rt = Arc::clone(&ctx.runtime);
        let req = session.req_header();
        match ctx.route.and_then(|r| rt.route(r).cache.as_ref()) {
            Some(rc) => Ok(rc.key(
                req,
                crate::cache::Scheme::of(ctx.tls),
                ctx.host.as_ref().map_or("", |h| h.as_str()),
            )),
            None => Error::e_explain(
                ErrorType::InternalError,
                "cache key without a caching route",
            ),
        }
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<RespCacheable> {
        let rt = Arc::clone(&ctx.runtime);
        let (Some(rc), Some(store)) = (
            ctx.route.and_then(|r| rt.route(r).cache.as_ref()),
            &rt.cache,
        ) else {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::NeverEnabled));
        };
        let auth = ctx.authenticated
            || session
                .req_header()
                .headers
                .contains_key(http::header::AUTHORIZATION);
        let merged = caching::merge_revalidation(resp, ctx);
        let resp = merged.as_ref().unwrap_or(resp);
        Ok(crate::cache::cacheability(
            resp,
            auth,
            ctx.cookie_request,
            rc,
            store.ttl_cap,
            &store.targeted,
        ))
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        meta: &CacheMeta,
        _hit_handler: &mut pingora_cache::storage::HitHandler,
        _is_fresh: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<pingora_cache::ForcedFreshness>> {
        let rt = Arc::clone(&ctx.runtime);
        Ok((!caching::hit_allowed(&rt, meta, ctx))
            .then_some(pingora_cache::ForcedFreshness::ForceMiss))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        crate::cache::variance(meta, req)
    }

    fn should_serve_stale(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        let rt = Arc::clone(&ctx.runtime);
        // The stored entry's own stale-while-revalidate / stale-if-error windows still apply;
        // this only says the route is willing (None = a background revalidation).
        let caching = ctx.route.is_some_and(|r| rt.route(r).cache.is_some());
        let serve = caching && error.is_none_or(|e| Failure::of(e, ctx).serves_stale());
        if serve && error.is_some() {
            // Pingora closes the connection after a stale-if-error answer; say so up front.
            session.set_keepalive(None);
        }
        serve
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let rt = Arc::clone(&ctx.runtime);
        let Some(up) = upstream_of(&rt, ctx) else {
            return Error::e_explain(ErrorType::InternalError, "upstream_peer without a route");
        };
        let up = up.clone();
        ctx.upstream_started
            .get_or_insert_with(std::time::Instant::now);
        if let Some(prev) = ctx.backend.take() {
            ctx.tried.push(prev);
        }
        let mut ip_buf = [0u8; 16];
        let key = if up.hashes() {
            hash_input(session, &up.hash_key, &mut ip_buf)
        } else {
            &[]
        };
        // Pingora itself retries a request whose pooled connection turned out dead; when every
        // backend has been tried, such a retry may go back to one of them.
        let slot = up.select(key, &ctx.tried).or_else(|| {
            (!ctx.tried.is_empty())
                .then(|| up.select(key, &[]))
                .flatten()
        });
        let Some(slot) = slot else {
            return Err(Error::explain(
                ErrorType::HTTPStatus(503),
                format!("no healthy backend in upstream {}", up.name),
            ));
        };
        ctx.backend = Some(slot.id);
        let peer = up.peer(&slot);
        spans::attempt(&up, &slot, session, ctx);
        ctx.inflight = Some(up.begin(slot));
        Ok(peer)
    }

    fn persist_connection_context(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        // Marks the next request on this connection as a reuse (see HeaderTimeout).
        Some(Box::new(()))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let rt = Arc::clone(&ctx.runtime);
        spans::connect_failed(ctx, &e);
        let Some(up) = upstream_of(&rt, ctx) else {
            return e;
        };
        let Some(slot) = ctx.current_backend() else {
            return e;
        };
        up.record_backend(slot, true);
        let id = slot.id;
        ctx.connect_failed = Some(id);
        // A refused or timed-out connect never reached the backend, so another one may be
        // tried; with nowhere else to go, the connect error itself is the answer (502/504).
        e.set_retry(ctx.tried.len() < up.retries && up.has_alternative(&ctx.tried, id));
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let rt = Arc::clone(&ctx.runtime);
        let Some(route) = ctx.route.map(|r| rt.route(r)) else {
            return Ok(());
        };
        let Action::Proxy {
            strip_prefix,
            preserve_host,
            ..
        } = &route.action
        else {
            return Ok(());
        };
        if let Some(prefix) = strip_prefix {
            forwarding::strip_prefix(upstream_request, prefix)?;
        }
        if route.cache.as_ref().is_some_and(|rc| rc.ignore_query) {
            // The query is not in the key, so it must not change what the origin answers.
            forwarding::strip_query(upstream_request)?;
        }
        static NO_HOST: http::HeaderValue = http::HeaderValue::from_static("");
        let backend_host = match ctx.current_backend() {
            Some(slot) => slot.host_header(),
            None => &NO_HOST,
        };
        forwarding::upstream_headers(
            session,
            upstream_request,
            ctx,
            *preserve_host,
            backend_host,
            &rt,
        )?;
        spans::inject(ctx, upstream_request)?;
        plugins::upstream_request(&rt, upstream_request, ctx).await;
        mirroring::start(&rt, session, upstream_request, ctx);
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        mirroring::body(ctx, body.as_ref(), end_of_stream);
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let rt = Arc::clone(&ctx.runtime);
        ctx.upstream_duration = ctx.upstream_started.map(|t| t.elapsed());
        if upstream_response.status == http::StatusCode::SWITCHING_PROTOCOLS
            && !upgrade::switch_allowed(session.req_header(), upstream_response)
        {
            // Before `response_started`: the client chose the tokens, so this is not counted
            // against the backend.
            return Error::e_explain(
                ErrorType::HTTPStatus(502),
                "101 from the upstream without a matching Upgrade request",
            );
        }
        caching::note_revalidation(session, upstream_response, ctx);
        spans::upstream_status(ctx, upstream_response.status.as_u16());
        if let Some(i) = ctx.upstream {
            let status = upstream_response.status.as_u16();
            protection::response_started(rt.upstream(i), ctx, status);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let rt = Arc::clone(&ctx.runtime);
        // A request that arrived before SIGQUIT still closes its connection when its response
        // goes out after it (see `server::draining`).
        if crate::server::draining() {
            session.set_keepalive(None);
        }
        protection::rate_headers(&rt, ctx, upstream_response)?;
        if let Some(cookie) = ctx.split_cookie.take() {
            upstream_response.append_header(http::header::SET_COOKIE, *cookie)?;
        }
        caching::on_response(&rt, session, upstream_response, ctx).await?;
        compressing::on_response(&rt, session, upstream_response, ctx)?;
        if let Some(id) = &ctx.request_id {
            header_names::REQUEST_ID.set_on_response(upstream_response, id.clone())?;
        }
        plugins::response(&rt, session, upstream_response, ctx).await;
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let rt = Arc::clone(&ctx.runtime);
        let failure = Failure::of(e, ctx);
        if let (true, Some(i)) = (failure.counts_against_backend(), ctx.upstream) {
            protection::record_outcome(rt.upstream(i), ctx, None);
        }
        let (code, body) = (failure.status, failure.body);
        let error_code = if failure.fault == failure::Fault::ClientGone {
            0
        } else if let Some(sent) = session.response_written() {
            // The header already went out; all we can do is close the stream.
            sent.status.as_u16()
        } else {
            if let Err(write_err) = respond::error(session, ctx, code, body, true).await {
                log::debug!("failed to send error response: {write_err}");
            }
            code
        };
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if let Err(e) = compressing::inflate_body(body, end_of_stream, ctx) {
            ctx.runtime.metrics.record_decompression_cut();
            // 502 when nothing was sent yet; either way not the backend's fault for the
            // breaker: the client's Accept-Encoding decided that the body be decoded.
            return Error::e_explain(
                ErrorType::HTTPStatus(502),
                format!("decompressing the upstream's gzip: {e:?}"),
            );
        }
        compressing::encode_body(body, end_of_stream, ctx)?;
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let rt = Arc::clone(&ctx.runtime);
        if let Some(i) = ctx.upstream {
            protection::finish(rt.upstream(i), ctx, e);
        }
        observe::finish(&rt, session, e, ctx);
        // Before the plugins' hooks, so the server span ends when the response did.
        spans::finish(&rt, session, e, ctx);
        plugins::logging(&rt, session, ctx).await;
    }
}

/// The bytes a consistent-hash upstream hashes for this request, without allocating.
fn hash_input<'a>(session: &'a Session, key: &HashKey, ip_buf: &'a mut [u8; 16]) -> &'a [u8] {
    match key {
        HashKey::ClientIp => match session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
        {
            Some(std::net::IpAddr::V4(v4)) => {
                ip_buf[..4].copy_from_slice(&v4.octets());
                &ip_buf[..4]
            }
            Some(std::net::IpAddr::V6(v6)) => {
                *ip_buf = v6.octets();
                &ip_buf[..]
            }
            None => &[],
        },
        HashKey::Path => session.req_header().uri.path().as_bytes(),
        HashKey::Header(name) => session
            .req_header()
            .headers
            .get(name)
            .map_or(&[][..], |v| v.as_bytes()),
    }
}

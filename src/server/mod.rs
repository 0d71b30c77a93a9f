//! Bootstrap: turns a validated [`Config`] into a running Pingora server.
//!
//! [`Gateway::builder`] compiles the runtime model; [`Gateway::into_server`] adds the proxy
//! listeners, the admin listener and the health-check services to a Pingora [`Server`] built
//! with `Server::new_with_opt_and_conf`, so `-u` upgrades and `-d` daemonizing work.

mod builder;
mod drain;
mod listeners;

pub use drain::draining;

pub use builder::GatewayBuilder;

use crate::config::{Config, ConfigError};
use crate::runtime::Runtime;
use crate::upstream::HealthService;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server};
use std::sync::Arc;

/// A built gateway: the validated config, the compiled runtime and its background services.
pub struct Gateway {
    config: Config,
    runtime: Arc<Runtime>,
    health: Vec<HealthService>,
    pool_size: usize,
}

impl Gateway {
    /// Starts building a gateway.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// Loads, validates and builds from a YAML file; every error names the file, line and key.
    pub fn from_file(path: &str) -> Result<Gateway, ConfigError> {
        Gateway::builder().build_from_file(path)
    }

    /// The configuration this gateway was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The compiled runtime model (routes, upstreams).
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The Pingora server settings derived from `server:`.
    pub fn server_conf(&self) -> ServerConf {
        let s = &self.config.server;
        let mut conf = ServerConf {
            threads: s.workers,
            pid_file: s.pid_file.clone(),
            upgrade_sock: s.upgrade_sock.clone(),
            grace_period_seconds: Some(s.grace_period_seconds),
            graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout_seconds),
            daemon: s.daemon,
            error_log: s.error_log.clone(),
            user: s.user.clone(),
            group: s.group.clone(),
            work_stealing: s.work_stealing,
            listener_tasks_per_fd: s.listener_tasks_per_fd,
            upstream_keepalive_pool_size: self.pool_size,
            ..ServerConf::default()
        };
        conf.version = 1;
        conf
    }

    /// Builds the Pingora server with every service added, bootstrapped (fds taken over on `-u`).
    pub fn into_server(self, opt: Opt) -> pingora_error::Result<Server> {
        // Pingora retries a busy port for 30 s and then panics inside the service while the
        // process lives on; checking first turns that into a clear start-up error. On an
        // upgrade the sockets come from the old process instead.
        if !opt.upgrade {
            listeners::check_bindable(&self.config)?;
        }
        let mut server = Server::new_with_opt_and_conf(opt, self.server_conf());
        // Subscribed before bootstrap and daemonizing so no phase change is missed.
        let drain = drain::DrainWatch::new(server.watch_execution_phase());
        server.bootstrap();
        let conf = server.configuration.clone();
        for svc in listeners::proxy_services(&conf, &self.config, &self.runtime)? {
            server.add_boxed_service(svc);
        }
        if let Some(admin) = &self.config.admin {
            server.add_boxed_service(crate::admin::service(admin, &self.runtime));
        }
        server.add_service(pingora_core::services::background::background_service(
            "upgrade drain",
            drain,
        ));
        for svc in self.health {
            server.add_boxed_service(svc);
        }
        if let Some(tracer) = &self.runtime.tracing {
            server.add_boxed_service(tracer.service());
        }
        match &self.runtime.access_log {
            Some(log) => server.add_boxed_service(log.service()),
            None => server.add_boxed_service(crate::access_log::ignore_sigusr1()),
        };
        Ok(server)
    }

    /// Runs until a shutdown signal, then returns (daemonizes first when configured).
    pub fn run(self, opt: Opt) -> pingora_error::Result<()> {
        let runtime = self.runtime.clone();
        self.into_server(opt)?.run(RunArgs::default());
        // Every runtime has stopped, so no more lines come: write out what is queued.
        if let Some(log) = &runtime.access_log {
            log.shutdown(std::time::Duration::from_secs(2));
        }
        Ok(())
    }
}

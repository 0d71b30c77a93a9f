//! A real DNS server on loopback: UDP and TCP on one port, answering `A` queries from a record
//! set the test changes while the gateway runs. Built on hickory-proto's message types, so
//! the bytes on the wire are real DNS.

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// Name (lowercase, no trailing dot) -> (addresses, TTL in seconds).
type Records = Arc<Mutex<HashMap<String, (Vec<Ipv4Addr>, u32)>>>;

/// A running DNS server; stopped on drop.
pub struct DnsServer {
    /// Where it listens (UDP and TCP).
    pub addr: SocketAddr,
    records: Records,
    queries: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Starts a server with no records on a free loopback port.
    pub async fn start() -> DnsServer {
        // Retry until a port is free for both protocols.
        for _ in 0..20 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
            let addr = udp.local_addr().expect("udp addr");
            let Ok(tcp) = TcpListener::bind(addr).await else {
                continue;
            };
            let records: Records = Arc::default();
            let queries = Arc::new(AtomicUsize::new(0));
            let tasks = vec![
                tokio::spawn(serve_udp(udp, records.clone(), queries.clone())),
                tokio::spawn(serve_tcp(tcp, records.clone(), queries.clone())),
            ];
            return DnsServer {
                addr,
                records,
                queries,
                tasks,
            };
        }
        panic!("no free port for the DNS server");
    }

    /// Makes `name` resolve to `ips` with this TTL (an empty list: the name exists, no `A`).
    pub fn set(&self, name: &str, ips: &[&str], ttl: u32) {
        let ips = ips
            .iter()
            .map(|ip| ip.parse().expect("an IPv4 address"))
            .collect();
        self.records
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), (ips, ttl));
    }

    /// Queries answered so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }

    /// Stops answering: both sockets are closed.
    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve_udp(sock: UdpSocket, records: Records, queries: Arc<AtomicUsize>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        if let Some(reply) = answer(&buf[..n], &records) {
            queries.fetch_add(1, Ordering::Relaxed);
            let _ = sock.send_to(&reply, peer).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, records: Records, queries: Arc<AtomicUsize>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let (records, queries) = (records.clone(), queries.clone());
        conns.spawn(async move {
            // Messages are framed by a two-byte length (RFC 1035 4.2.2).
            loop {
                let Ok(len) = sock.read_u16().await else {
                    return;
                };
                let mut msg = vec![0u8; len as usize];
                if sock.read_exact(&mut msg).await.is_err() {
                    return;
                }
                let Some(reply) = answer(&msg, &records) else {
                    return;
                };
                queries.fetch_add(1, Ordering::Relaxed);
                let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&reply);
                if sock.write_all(&framed).await.is_err() {
                    return;
                }
            }
        });
        while conns.try_join_next().is_some() {}
    }
}

/// The reply to one query message: the name's `A` records, an empty answer for other types
/// of a known name, `NXDOMAIN` for an unknown one.
fn answer(query: &[u8], records: &Records) -> Option<Vec<u8>> {
    let req = Message::from_bytes(query).ok()?;
    let mut resp = Message::new();
    resp.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    let records = records.lock().unwrap();
    for q in req.queries() {
        resp.add_query(q.clone());
        let name = q
            .name()
            .to_ascii()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        match records.get(&name) {
            Some((ips, ttl)) if q.query_type() == RecordType::A => {
                for ip in ips {
                    resp.add_answer(Record::from_rdata(q.name().clone(), *ttl, RData::A(A(*ip))));
                }
            }
            Some(_) => {}
            None => {
                resp.set_response_code(ResponseCode::NXDomain);
            }
        }
    }
    resp.to_bytes().ok()
}

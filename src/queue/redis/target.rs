//! Where the queue's Redis is: a `--redis` URL read once into a [`Target`].
//!
//! - `redis://` and `rediss://` (and `redis+unix://`): one server, read by redis-rs.
//! - `redis+sentinel://[user:pass@]HOST:PORT[,HOST:PORT...]/MASTER[?options]`, and
//!   `rediss+sentinel://` for TLS to the sentinels and the servers: the sentinels are asked
//!   which server is the primary of `MASTER` (see [`super::link`]). The user and password
//!   are the servers' (the primary's and its replicas'). Options: `db=N` (the database
//!   number, default 0), `sentinel_username=` and `sentinel_password=` (when the sentinels
//!   themselves require AUTH). A port left out is 26379, Sentinel's own.
//!
//! - `redis+cluster://[user:pass@]HOST:PORT[,HOST:PORT...]`, and `rediss+cluster://` for TLS:
//!   a Redis Cluster, found from any of the nodes named (redis-rs's cluster client learns the
//!   slots and follows `MOVED`). A port left out is 6379. No path or options: a cluster has
//!   only database 0.
//!
//! A URL that does not read is a [`BadUrl`] that says what is wrong and where, and never
//! holds the password.

use redis::sentinel::SentinelNodeConnectionInfo;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, TlsMode};

/// The port a sentinel listens on when the URL names none.
pub const SENTINEL_PORT: u16 = 26379;

/// Where the queue's Redis is.
#[derive(Clone)]
pub enum Target {
    /// One server, always the same address.
    Server(redis::Client),
    /// A primary found through sentinels.
    Sentinel(SentinelTarget),
    /// A Redis Cluster.
    Cluster(ClusterTarget),
}

/// A Redis Cluster: the nodes to start from, each with the AUTH and TLS of every node.
#[derive(Clone)]
pub struct ClusterTarget {
    /// The nodes the URL names, in its order.
    pub nodes: Vec<ConnectionInfo>,
    /// TLS to every node.
    pub tls: bool,
}

impl ClusterTarget {
    /// The nodes as `host:port, host:port` (no credentials), for messages.
    pub fn node_list(&self) -> String {
        addr_list(&self.nodes)
    }
}

/// Addresses as `host:port, host:port` (no credentials).
fn addr_list(infos: &[ConnectionInfo]) -> String {
    infos
        .iter()
        .map(|s| s.addr().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A Sentinel deployment: whom to ask, which master, how to reach the servers.
#[derive(Clone)]
pub struct SentinelTarget {
    /// The sentinels, in the URL's order (with their own AUTH and TLS, when given).
    pub sentinels: Vec<ConnectionInfo>,
    /// The master name the sentinels monitor.
    pub master: String,
    /// How to connect to the servers the sentinels name (AUTH, TLS, database).
    pub node: SentinelNodeConnectionInfo,
}

impl SentinelTarget {
    /// The sentinels as `host:port, host:port` (no credentials), for messages.
    pub fn sentinel_list(&self) -> String {
        addr_list(&self.sentinels)
    }
}

impl std::fmt::Debug for Target {
    // By hand: a connection info holds the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Server(c) => write!(f, "Server({})", c.get_connection_info().addr()),
            Target::Sentinel(s) => write!(f, "Sentinel({} at {})", s.master, s.sentinel_list()),
            Target::Cluster(c) => write!(f, "Cluster({})", c.node_list()),
        }
    }
}

/// A Redis URL that does not read; the text names what is wrong and never the password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid Redis URL: {0}")]
pub struct BadUrl(pub String);

fn bad(reason: impl Into<String>) -> BadUrl {
    BadUrl(reason.into())
}

impl Target {
    /// Reads a `--redis` URL.
    pub fn parse(url: &str) -> Result<Target, BadUrl> {
        let url = url.trim();
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad("expected SCHEME://..., e.g. redis://127.0.0.1:6379"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "redis+sentinel" => false,
            "rediss+sentinel" => true,
            "redis+cluster" => return parse_cluster(rest, false).map(Target::Cluster),
            "rediss+cluster" => return parse_cluster(rest, true).map(Target::Cluster),
            "redis" | "rediss" | "redis+unix" | "unix" => {
                // redis-rs's messages name no part of the URL.
                return redis::Client::open(url)
                    .map(Target::Server)
                    .map_err(|e| bad(format!("{scheme}:// URL: {e}")));
            }
            other => {
                return Err(bad(format!(
                    "unknown scheme {other:?}: use redis://, rediss://, redis+sentinel://, \
                     rediss+sentinel://, redis+cluster:// or rediss+cluster://"
                )));
            }
        };
        parse_sentinel(rest, tls).map(Target::Sentinel)
    }
}

/// The part of a Sentinel URL after `://`.
fn parse_sentinel(rest: &str, tls: bool) -> Result<SentinelTarget, BadUrl> {
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    // The credentials end at the last '@' (a password's own '@' should be %40, but a bare
    // one is read the same way).
    let (userinfo, rest) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (hosts, master) = rest.split_once('/').ok_or_else(|| {
        bad("Sentinel URL names no master: expected redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER_NAME")
    })?;
    let master = decode(master).ok_or_else(|| bad("master name: bad %-escape"))?;
    if master.is_empty() {
        return Err(bad(
            "Sentinel URL names no master: expected .../MASTER_NAME after the sentinels",
        ));
    }
    if master.contains('/') || master.chars().any(char::is_whitespace) {
        return Err(bad(format!(
            "master name {master:?}: no '/' or spaces (options go after '?')"
        )));
    }
    let mut node = credentials(userinfo)?;
    let mut sentinel_auth = RedisConnectionInfo::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value).ok_or_else(|| bad(format!("option {name}: bad %-escape")))?;
        match name {
            "db" => {
                let db: i64 =
                    value.parse().ok().filter(|d| *d >= 0).ok_or_else(|| {
                        bad(format!("option db={value:?}: expected a number >= 0"))
                    })?;
                node = node.set_db(db);
            }
            "sentinel_username" => sentinel_auth = sentinel_auth.set_username(value),
            "sentinel_password" => sentinel_auth = sentinel_auth.set_password(value),
            other => {
                return Err(bad(format!(
                    "unknown option {other:?}: Sentinel URLs take db, sentinel_username and \
                     sentinel_password"
                )));
            }
        }
    }
    let mut sentinels = Vec::new();
    for (i, host) in hosts.split(',').enumerate() {
        let info = node_info(host, SENTINEL_PORT, tls)
            .map_err(|reason| bad(format!("sentinel {} ({host:?}): {reason}", i + 1)))?
            .set_redis_settings(sentinel_auth.clone());
        sentinels.push(info);
    }
    let mut node_info = SentinelNodeConnectionInfo::default().set_redis_connection_info(node);
    if tls {
        node_info = node_info.set_tls_mode(TlsMode::Secure);
    }
    Ok(SentinelTarget {
        sentinels,
        master,
        node: node_info,
    })
}

/// The user and password before the `@` (percent-decoded; empty ones left out).
fn credentials(userinfo: Option<&str>) -> Result<RedisConnectionInfo, BadUrl> {
    let mut node = RedisConnectionInfo::default();
    if let Some(info) = userinfo {
        let (user, pass) = match info.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (info, None),
        };
        let user = decode(user).ok_or_else(|| bad("user name: bad %-escape"))?;
        if !user.is_empty() {
            node = node.set_username(user);
        }
        if let Some(pass) = pass {
            let pass = decode(pass).ok_or_else(|| bad("password: bad %-escape"))?;
            if !pass.is_empty() {
                node = node.set_password(pass);
            }
        }
    }
    Ok(node)
}

/// One `HOST:PORT` of a list, over TLS or not.
fn node_info(host: &str, default_port: u16, tls: bool) -> Result<ConnectionInfo, String> {
    let (host, port) = host_port(host.trim(), default_port)?;
    let addr = if tls {
        ConnectionAddr::TcpTls {
            host,
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host, port)
    };
    addr.into_connection_info().map_err(|e| e.to_string())
}

/// The part of a Cluster URL after `://`: `[user:pass@]HOST:PORT[,HOST:PORT...]`.
fn parse_cluster(rest: &str, tls: bool) -> Result<ClusterTarget, BadUrl> {
    let (userinfo, hosts) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
    if hosts.contains(['/', '?']) {
        return Err(bad("Cluster URL takes no path or options: expected \
             redis+cluster://HOST:PORT[,HOST:PORT...] (a cluster has only database 0)"));
    }
    let auth = credentials(userinfo)?;
    let mut nodes = Vec::new();
    for (i, host) in hosts.split(',').enumerate() {
        let info = node_info(host, 6379, tls)
            .map_err(|reason| bad(format!("cluster node {} ({host:?}): {reason}", i + 1)))?
            .set_redis_settings(auth.clone());
        nodes.push(info);
    }
    Ok(ClusterTarget { nodes, tls })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn host_port(s: &str, default_port: u16) -> Result<(String, u16), String> {
    if s.is_empty() {
        return Err("empty address (expected HOST:PORT)".into());
    }
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or("'[' without ']' (expected [IPv6]:PORT)")?;
        match after {
            "" => (host, None),
            p => (
                host,
                Some(p.strip_prefix(':').ok_or("expected ':' after ']'")?),
            ),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err("expected HOST:PORT".into());
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("port {p:?} is not a number from 1 to 65535"))?,
    };
    Ok((host.to_string(), port))
}

/// Percent-decoding of one URL component (`+` is a plus, as in a URL's authority).
fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinel(url: &str) -> SentinelTarget {
        match Target::parse(url) {
            Ok(Target::Sentinel(s)) => s,
            other => panic!("{url}: {other:?}"),
        }
    }

    #[test]
    fn a_sentinel_url_names_its_sentinels_master_and_credentials() {
        let s = sentinel(
            "redis+sentinel://app:s%40cret@10.0.0.1:26379,sentinel-b,[::1]:26380/queue-main?db=2&sentinel_password=x",
        );
        assert_eq!(s.master, "queue-main");
        assert_eq!(
            s.sentinel_list(),
            "10.0.0.1:26379, sentinel-b:26379, ::1:26380"
        );
        assert_eq!(s.sentinels[0].redis_settings().password(), Some("x"));
        let node = format!("{:?}", s.node);
        assert!(!node.contains("s@cret"), "{node}");
        let t = sentinel("rediss+sentinel://h:1/m");
        assert!(matches!(
            t.sentinels[0].addr(),
            ConnectionAddr::TcpTls { .. }
        ));
    }

    #[test]
    fn a_bad_sentinel_url_says_what_is_wrong_and_never_the_password() {
        for (url, says) in [
            ("redis+sentinel://:pw1@h:1", "names no master"),
            ("redis+sentinel://:pw1@h:1/", "names no master"),
            ("redis+sentinel://:pw1@h:99999/m", "sentinel 1"),
            ("redis+sentinel://:pw1@h:1,/m", "sentinel 2"),
            (
                "redis+sentinel://:pw1@h:1/m?color=red",
                "unknown option \"color\"",
            ),
            ("redis+sentinel://:pw1@h:1/m?db=x", "option db"),
            ("redis+sentinel://:pw1@h:1/m/extra", "master name"),
            ("redis+sentinal://:pw1@h:1/m", "unknown scheme"),
            ("no-scheme", "SCHEME://"),
        ] {
            let e = match Target::parse(url) {
                Err(e) => e.to_string(),
                Ok(t) => panic!("{url} read as {t:?}"),
            };
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("pw1"), "{url}: {e}");
        }
    }

    #[test]
    fn plain_urls_stay_one_server() {
        assert!(matches!(
            Target::parse("redis://:pw@127.0.0.1:6379/0"),
            Ok(Target::Server(_))
        ));
        let shown = format!("{:?}", Target::parse("redis://:pw@127.0.0.1:6379/0"));
        assert!(!shown.contains("pw"), "{shown}");
    }
}

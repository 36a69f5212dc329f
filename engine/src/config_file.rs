//! `--config FILE`: the hub's and the edge's settings in TOML, with the same keys as the IPC
//! configuration, so one reference serves both: `[hub]` holds IHubConfig, `[[edges]]` the allowed
//! edges (TAllowedEdge), `[[egress]]` the hub's persistent egress listeners
//! (IEgressListenerConfig), `[edge]` IEdgeConfig. Flags and variables override the file. Errors
//! name the file, the line and the field.

use std::path::{Path, PathBuf};

use remoteingress_ipc_schema::{AllowedEdge, EdgeConfig, EgressListenerConfig, HubConfig};
use serde::Deserialize;

/// Why a `--config` file cannot be used; the binary prints the Display (tests grep it), which
/// starts with the file's name.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigFileError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: TomlError,
    },
    /// A hub given an edge's file: it must not start with defaults.
    #[error(
        "{file}: is an edge's configuration ([edge]); a hub reads [hub] and [[edges]] \
         (run `remoteingress-bin edge --config {file}`, or give the hub its own file)",
        file = .0.display()
    )]
    EdgeFileForHub(PathBuf),
    #[error("{}: has neither [hub] nor [[edges]]: nothing for a hub", .0.display())]
    NothingForHub(PathBuf),
    /// An edge given a hub's file.
    #[error(
        "{file}: is a hub's configuration ([hub], [[edges]]); an edge reads [edge] \
         (run `remoteingress-bin hub --config {file}`, or give the edge its own file)",
        file = .0.display()
    )]
    HubFileForEdge(PathBuf),
    #[error("{}: has no [edge] table: nothing for an edge", .0.display())]
    NothingForEdge(PathBuf),
}

/// TOML text that does not parse or does not fit the tables: `LINE: FIELD: what is wrong`
/// (line and field when known).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{} {message}", at_line(*.line), at_field(.field.as_deref()))]
pub(crate) struct TomlError {
    line: Option<usize>,
    field: Option<String>,
    message: String,
}

fn at_line(line: Option<usize>) -> String {
    line.map_or_else(String::new, |line| format!("{line}:"))
}

fn at_field(field: Option<&str>) -> String {
    field.map_or_else(String::new, |field| format!(" {field}:"))
}

/// A configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    pub hub: Option<HubConfig>,
    pub edges: Option<Vec<AllowedEdge>>,
    pub egress: Option<Vec<EgressListenerConfig>>,
    pub edge: Option<EdgeConfig>,
}

impl ConfigFile {
    /// Whether the file holds a hub's part (`[hub]` or `[[edges]]`).
    pub(crate) fn has_hub(&self) -> bool {
        self.hub.is_some() || self.edges.is_some()
    }

    /// Whether the file holds a secret: edges (their secrets), the hub's TLS key, or the edge's
    /// token or secret.
    fn holds_secrets(&self) -> bool {
        let hub_key = self.hub.as_ref().is_some_and(|hub| hub.tls.is_some());
        let edge_secret = self
            .edge
            .as_ref()
            .is_some_and(|edge| edge.token.is_some() || edge.secret.is_some());
        hub_key || edge_secret || self.edges.as_ref().is_some_and(|edges| !edges.is_empty())
    }
}

/// A configuration file as read: its tables, and its path and text, so that errors found after
/// parsing (a port listed twice, a short secret) can name the file and the line too.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub file: ConfigFile,
    pub path: PathBuf,
    text: String,
}

impl Loaded {
    /// `FILE:LINE: ` for the field at `field` (a path like `edges[1].listenPorts[0]`, as
    /// configuration errors name it), or `FILE: ` when the file does not hold it.
    pub(crate) fn place(&self, field: &str) -> String {
        match crate::field_place::toml_line(&self.text, field) {
            Some(line) => format!("{}:{line}: ", self.path.display()),
            None => format!("{}: ", self.path.display()),
        }
    }

    /// The hub's part; an error when the file has none (an edge's file given to a hub must not
    /// start a hub with defaults).
    pub(crate) fn hub_part(&self) -> Result<(), ConfigFileError> {
        if self.file.has_hub() {
            Ok(())
        } else if self.file.edge.is_some() {
            Err(ConfigFileError::EdgeFileForHub(self.path.clone()))
        } else {
            Err(ConfigFileError::NothingForHub(self.path.clone()))
        }
    }

    /// The edge's part; an error when the file has none (see [`Loaded::hub_part`]).
    pub(crate) fn edge_part(&self) -> Result<(), ConfigFileError> {
        if self.file.edge.is_some() {
            Ok(())
        } else if self.file.has_hub() {
            Err(ConfigFileError::HubFileForEdge(self.path.clone()))
        } else {
            Err(ConfigFileError::NothingForEdge(self.path.clone()))
        }
    }
}

/// Reads and checks `path`; the error says `FILE:LINE: FIELD: what is wrong`.
pub(crate) fn load(path: &Path) -> Result<Loaded, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file = parse(&text).map_err(|source| ConfigFileError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    if file.holds_secrets() {
        crate::secret_files::warn_if_exposed(path);
    }
    Ok(Loaded {
        file,
        path: path.to_owned(),
        text,
    })
}

/// Parses TOML text; the error says `LINE: FIELD: what is wrong`.
pub(crate) fn parse(text: &str) -> Result<ConfigFile, TomlError> {
    let deserializer = toml::Deserializer::parse(text).map_err(|e| describe(text, &e, ""))?;
    serde_path_to_error::deserialize(deserializer)
        .map_err(|e| describe(text, e.inner(), &e.path().to_string()))
}

fn describe(text: &str, error: &toml::de::Error, field: &str) -> TomlError {
    let line = error
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let field = (!field.is_empty() && field != ".").then(|| field.to_owned());
    TomlError {
        line,
        field,
        message: error.message().trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_file_with_edges() {
        let file = parse(
            r#"
[hub]
tunnelPort = 9443
metricsAddr = "127.0.0.1:9101"

[[edges]]
id = "edge-1"
secret = "s3cret-0123456789"
listenPorts = [80, 443]
targetPorts = [{ port = 443, targetPort = 8443 }]
"#,
        )
        .unwrap();
        assert_eq!(file.hub.unwrap().tunnel_port, 9443);
        let edges = file.edges.unwrap();
        assert_eq!(edges[0].listen_ports, vec![80, 443]);
        assert!(file.edge.is_none());
    }

    #[test]
    fn egress_listeners() {
        let file = parse(
            r#"
[[egress]]
listenAddr = "127.0.0.1:2525"
edgeId = "edge-1"
logicalHost = "smtp.example.net"
port = 25
serverFirst = true
"#,
        )
        .unwrap();
        let egress = file.egress.unwrap();
        assert_eq!(egress[0].listen_addr, "127.0.0.1:2525");
        assert!(egress[0].server_first);
        let error = parse("[[egress]]\nlistenAddr = \"127.0.0.1:1\"\nedgeId = \"e\"\nlogicalHost = \"h\"\nport = 25\nmaxConection = 1\n")
            .unwrap_err().to_string();
        assert!(
            error.contains("egress[0]") && error.contains("unknown field"),
            "{error}"
        );
    }

    #[test]
    fn proxy_protocol_for_the_hub_an_edge_and_a_port() {
        use remoteingress_ipc_schema::ProxyProtocolVersion;
        let file = parse(
            r#"
[hub]
proxyProtocol = "none"
udpProxyHeader = "every"

[[edges]]
id = "edge-1"
secret = "s3cret-0123456789"
listenPorts = [22, 443]
listenPortsUdp = [53]
proxyProtocol = "v2"
targetPorts = [{ port = 443, proxyProtocol = "v1" }, { port = 53, proxyProtocol = "none" }]
"#,
        )
        .unwrap();
        let hub = file.hub.unwrap();
        assert_eq!(hub.proxy_protocol, Some(ProxyProtocolVersion::None));
        assert_eq!(
            hub.udp_proxy_header,
            remoteingress_ipc_schema::UdpProxyHeaderMode::Every
        );
        let edges = file.edges.unwrap();
        assert_eq!(edges[0].proxy_protocol, Some(ProxyProtocolVersion::V2));
        let ports = edges[0].target_ports.as_deref().unwrap();
        assert_eq!(ports[0].target_port, None);
        assert_eq!(ports[0].proxy_protocol, Some(ProxyProtocolVersion::V1));
        assert_eq!(ports[1].proxy_protocol, Some(ProxyProtocolVersion::None));

        let error = parse("[[edges]]\nid = \"a\"\nsecret = \"b\"\nproxyProtocol = \"v3\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("4: edges[0].proxyProtocol:"), "{error}");
        let error = parse(
            "[[edges]]\nid = \"a\"\nsecret = \"b\"\n\
             targetPorts = [{ port = 22, proxyProtocol = \"off\" }]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("4: edges[0].targetPorts[0].proxyProtocol:"),
            "{error}"
        );
        let error = parse("[hub]\nproxyProtocol = \"v3\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("2: hub.proxyProtocol:"), "{error}");
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let error = parse("[hub]\ntunnelPort = 8443\n\n[[edges]]\nid = \"a\"\nsecret = \"b\"\nlistenPorts = [70000]\n")
            .unwrap_err().to_string();
        assert!(error.starts_with("7: edges[0].listenPorts[0]:"), "{error}");
        let error = parse("[hub]\ntunelPort = 1\n").unwrap_err().to_string();
        assert!(
            error.starts_with("2: hub.tunelPort:") || error.starts_with("2: hub:"),
            "{error}"
        );
        assert!(error.contains("unknown field"), "{error}");
        let error = parse("[hub\n").unwrap_err().to_string();
        assert!(error.starts_with("1:"), "{error}");
    }
}

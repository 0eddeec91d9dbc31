//! `mesh tls ca create` and `mesh tls cert create`, as `consul tls`: a CA
//! and certificates for the agents' own TLS (RPC, HTTPS, gRPC), written to
//! the current directory under Consul's file names. The certificates are
//! made by `mesh_ca` (`agent_tls.rs`); this module reads and writes files.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use mesh_ca::{
    generate_agent_ca, generate_agent_cert, AgentCaOptions, AgentCertKind, AgentCertOptions,
    DEFAULT_AGENT_CA_DAYS, DEFAULT_AGENT_CERT_DAYS, DEFAULT_AGENT_DATACENTER, DEFAULT_AGENT_DOMAIN,
};
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::time::SystemTime;

/// How many sequence numbers `cert create` tries before giving up, as
/// Consul (0 to 10000).
const MAX_SEQUENCE: u32 = 10_000;

/// The default `-ca` and `-key`; `#DOMAIN#` becomes `-domain`.
const DEFAULT_CA_FILE: &str = "#DOMAIN#-agent-ca.pem";
const DEFAULT_KEY_FILE: &str = "#DOMAIN#-agent-ca-key.pem";

const SERVER_WARNING: &str = "==> WARNING: Server Certificates grants authority to become a
    server and access all state in the cluster including root keys
    and all ACL tokens. Do not distribute them to production hosts
    that are not server nodes. Store them as securely as CA keys.";

/// Arguments of `mesh tls`.
#[derive(Args, Debug)]
pub struct TlsArgs {
    #[command(subcommand)]
    command: TlsCommand,
}

#[derive(Subcommand, Debug)]
enum TlsCommand {
    /// Helpers for CAs.
    Ca(CaArgs),
    /// Helpers for certificates.
    Cert(CertArgs),
}

#[derive(Args, Debug)]
struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Subcommand, Debug)]
enum CaCommand {
    /// Creates a new self-signed CA: <domain>-agent-ca.pem and
    /// <domain>-agent-ca-key.pem in the current directory.
    Create(CaCreateArgs),
}

#[derive(Args, Debug)]
struct CertArgs {
    #[command(subcommand)]
    command: CertCommand,
}

#[derive(Subcommand, Debug)]
enum CertCommand {
    /// Creates a new certificate signed by the CA:
    /// <dc>-<server|client|cli>-<domain>-<n>.pem and its -key.pem, <n> the
    /// first number not in use.
    Create(CertCreateArgs),
}

#[derive(Args, Debug)]
struct CaCreateArgs {
    /// Number of days the CA is valid for.
    #[arg(long, default_value_t = DEFAULT_AGENT_CA_DAYS, allow_negative_numbers = true)]
    days: i64,
    /// The DNS domain of the cluster: names the files, and is the permitted
    /// domain with -name-constraint.
    #[arg(long, default_value = DEFAULT_AGENT_DOMAIN)]
    domain: String,
    /// Adds X.509 name constraints: the CA only certifies names under
    /// -domain, localhost and -additional-name-constraint.
    #[arg(long)]
    name_constraint: bool,
    /// Another permitted DNS domain with -name-constraint (repeatable).
    #[arg(long = "additional-name-constraint")]
    additional_name_constraints: Vec<String>,
    /// Common name of the CA. Defaults to "Consul Agent CA <serial>".
    #[arg(long)]
    common_name: Option<String>,
    /// ID of the cluster: the CA carries the URI SAN
    /// spiffe://<cluster-id>.<domain>.
    #[arg(long)]
    cluster_id: Option<String>,
}

#[derive(Args, Debug)]
struct CertCreateArgs {
    /// Generate a server certificate.
    #[arg(long)]
    server: bool,
    /// Generate a client agent certificate.
    #[arg(long)]
    client: bool,
    /// Generate a CLI certificate.
    #[arg(long)]
    cli: bool,
    /// The datacenter.
    #[arg(long, default_value = DEFAULT_AGENT_DATACENTER)]
    dc: String,
    /// The DNS domain of the cluster.
    #[arg(long, default_value = DEFAULT_AGENT_DOMAIN)]
    domain: String,
    /// Number of days the certificate is valid for.
    #[arg(long, default_value_t = DEFAULT_AGENT_CERT_DAYS, allow_negative_numbers = true)]
    days: i64,
    /// Path to the CA certificate.
    #[arg(long, default_value = DEFAULT_CA_FILE)]
    ca: String,
    /// Path to the CA's private key.
    #[arg(long, default_value = DEFAULT_KEY_FILE)]
    key: String,
    /// With -server, adds the DNS name <node>.server.<dc>.<domain>.
    #[arg(long)]
    node: Option<String>,
    /// Another DNS name for the Subject Alternative Names (repeatable);
    /// localhost is always included.
    #[arg(long = "additional-dnsname")]
    additional_dnsnames: Vec<String>,
    /// Another IP address for the Subject Alternative Names (repeatable);
    /// 127.0.0.1 is always included for servers and client agents.
    #[arg(long = "additional-ipaddress")]
    additional_ipaddresses: Vec<IpAddr>,
}

/// Runs `mesh tls`.
pub fn run(args: TlsArgs) -> Result<()> {
    match args.command {
        TlsCommand::Ca(CaArgs {
            command: CaCommand::Create(a),
        }) => ca_create(a, Path::new(".")),
        TlsCommand::Cert(CertArgs {
            command: CertCommand::Create(a),
        }) => cert_create(a, Path::new(".")),
    }
}

/// Writes a new CA into `dir`, refusing to replace either file.
fn ca_create(args: CaCreateArgs, dir: &Path) -> Result<()> {
    let opts = AgentCaOptions {
        days: args.days,
        domain: args.domain,
        name_constraint: args.name_constraint,
        additional_name_constraints: args.additional_name_constraints,
        common_name: args.common_name,
        cluster_id: args.cluster_id,
    };
    let (cert_file, key_file) = opts.file_names();
    for name in [&cert_file, &key_file] {
        if dir.join(name).symlink_metadata().is_ok() {
            bail!("{name} already exists.");
        }
    }
    let ca = generate_agent_ca(&opts, SystemTime::now())?;
    write_new(dir, &cert_file, &ca.cert_pem, false)?;
    println!("==> Saved {cert_file}");
    write_new(dir, &key_file, &ca.key_pem, true)?;
    println!("==> Saved {key_file}");
    Ok(())
}

/// Writes a new certificate and key into `dir` under the first unused
/// sequence number.
fn cert_create(args: CertCreateArgs, dir: &Path) -> Result<()> {
    let kind = match (args.server, args.client, args.cli) {
        (true, false, false) => AgentCertKind::Server,
        (false, true, false) => AgentCertKind::Client,
        (false, false, true) => AgentCertKind::Cli,
        _ => bail!("Please provide either -server, -client, or -cli"),
    };
    if args.ca.is_empty() {
        bail!("Please provide the ca");
    }
    if args.key.is_empty() {
        bail!("Please provide the key");
    }
    let opts = AgentCertOptions {
        kind,
        datacenter: args.dc,
        domain: args.domain,
        days: args.days,
        node: args.node,
        additional_dns_names: args.additional_dnsnames,
        additional_ip_addresses: args.additional_ipaddresses,
    };
    opts.validate()?;

    let exists = |name: &str| dir.join(name).symlink_metadata().is_ok();
    let (cert_file, key_file) = (0..=MAX_SEQUENCE)
        .map(|n| opts.file_names(n))
        .find(|(cert, key)| !exists(cert) && !exists(key))
        .context("Could not find a filename that doesn't already exist")?;

    let domain = opts.domain.trim_end_matches('.');
    let ca_file = args.ca.replacen("#DOMAIN#", domain, 1);
    let ca_key_file = args.key.replacen("#DOMAIN#", domain, 1);
    let ca_pem = std::fs::read_to_string(dir.join(&ca_file))
        .with_context(|| format!("Error reading CA {ca_file}"))?;
    let ca_key_pem = std::fs::read_to_string(dir.join(&ca_key_file))
        .with_context(|| format!("Error reading CA key {ca_key_file}"))?;

    if kind == AgentCertKind::Server {
        println!("{SERVER_WARNING}");
    }
    println!("==> Using {ca_file} and {ca_key_file}");
    let issued = generate_agent_cert(&opts, &ca_pem, &ca_key_pem, SystemTime::now())
        .with_context(|| format!("Error creating a certificate signed by {ca_file}"))?;
    write_new(dir, &cert_file, &issued.cert_pem, false)?;
    println!("==> Saved {cert_file}");
    write_new(dir, &key_file, &issued.key_pem, true)?;
    println!("==> Saved {key_file}");
    Ok(())
}

/// Creates `dir/name` with `contents`, failing if it exists; a private key
/// is readable by its owner only.
fn write_new(dir: &Path, name: &str, contents: &str, private: bool) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(dir.join(name))
        .with_context(|| format!("Error creating {name}"))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("Error writing {name}"))
}

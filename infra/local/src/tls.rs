//! TLS in front of the stack's plain endpoints, for the benchmark's cold starts (issue 18, point 5):
//! on AWS a function's first call opens a TLS connection, whose handshake and certificate store
//! belong in the figure. A local CA, made with the `openssl` command in the stack's state folder,
//! signs a certificate for 127.0.0.1; a front terminates TLS with it and passes the bytes to the
//! plain endpoint behind. The processes trust the system's bundle plus the CA, so loading the
//! store costs what it costs on Lambda: `SSL_CERT_FILE` and `SSL_CERT_DIR` for rustls (the SDK's
//! `rustls-native-certs` loads both, as it loads the system's when they are unset), and
//! `AWS_CA_BUNDLE` for boto3 (botocore's own bundle with the CA appended).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Where Debian keeps the system's trust store: one bundle, and a folder of the same certificates.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const SYSTEM_CERTS: &str = "/etc/ssl/certs";

/// The local CA and the server certificate it signed, ready to front endpoints.
pub struct LocalTls {
    acceptor: TlsAcceptor,
    /// The system bundle with the CA appended (`SSL_CERT_FILE`).
    bundle: PathBuf,
    /// botocore's bundle with the CA appended (`AWS_CA_BUNDLE`), if botocore was found.
    python_bundle: Option<PathBuf>,
}

impl LocalTls {
    /// Makes the CA and the certificate in `dir` (afresh each time: they live as long as the run),
    /// and the bundles; `botocore_bundle` is botocore's `cacert.pem`, for the Python reference.
    pub fn create(dir: &Path, botocore_bundle: Option<&Path>) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let at = |name: &str| dir.join(name).display().to_string();
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .map_err(|e| e.to_string())?;
        // RSA 2048, as AWS's endpoints' certificates are, so the handshake costs what theirs does.
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "7",
            "-subj",
            "/CN=superpay local CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &at("ca.key"),
            "-out",
            &at("ca.pem"),
        ])?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &at("server.key"),
            "-out",
            &at("server.csr"),
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &at("server.csr"),
            "-CA",
            &at("ca.pem"),
            "-CAkey",
            &at("ca.key"),
            "-CAcreateserial",
            "-days",
            "7",
            "-extfile",
            &at("server.ext"),
            "-out",
            &at("server.pem"),
        ])?;
        let ca = std::fs::read(dir.join("ca.pem")).map_err(|e| e.to_string())?;
        let appended = |bundle: &Path, to: &str| -> Result<PathBuf, String> {
            let mut text = std::fs::read(bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
            text.push(b'\n');
            text.extend_from_slice(&ca);
            std::fs::write(dir.join(to), text).map_err(|e| e.to_string())?;
            Ok(dir.join(to))
        };
        let bundle = appended(Path::new(SYSTEM_BUNDLE), "bundle.pem")?;
        let python_bundle = botocore_bundle.map(|b| appended(b, "python-bundle.pem")).transpose()?;

        let chain = CertificateDer::pem_file_iter(dir.join("server.pem"))
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("the local server certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).map_err(|e| format!("its key: {e}"))?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| e.to_string())?;
        // The endpoints behind speak HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(LocalTls { acceptor: TlsAcceptor::from(Arc::new(config)), bundle, python_bundle })
    }

    /// The variables that make a process trust the CA beside the system's store.
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut environment = vec![
            ("SSL_CERT_FILE".to_owned(), self.bundle.display().to_string()),
            ("SSL_CERT_DIR".to_owned(), SYSTEM_CERTS.to_owned()),
        ];
        if let Some(python) = &self.python_bundle {
            environment.push(("AWS_CA_BUNDLE".to_owned(), python.display().to_string()));
        }
        environment
    }

    /// An `https://127.0.0.1:<port>` endpoint in front of the plain `http://127.0.0.1:<port>` one,
    /// until `shutdown`. Each connection's handshake runs on its own, as on a real endpoint.
    pub async fn front(&self, plain: &str, mut shutdown: watch::Receiver<bool>) -> Result<String, String> {
        let behind = plain.strip_prefix("http://").ok_or_else(|| format!("{plain} is not a plain http endpoint"))?;
        let behind = behind.trim_end_matches('/').to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = shutdown.changed() => return,
                };
                let Ok((client, _)) = accepted else { continue };
                let (acceptor, behind) = (acceptor.clone(), behind.clone());
                tokio::spawn(async move {
                    // No Nagle on either side, as on a real endpoint: otherwise a small answer waits
                    // for the ACK of the handshake's last flight, which the client may delay 40 ms,
                    // and a first call reads 10 ms in one run and 50 in the next.
                    let _ = client.set_nodelay(true);
                    let Ok(mut client) = acceptor.accept(client).await else { return };
                    let Ok(mut plain) = TcpStream::connect(&behind).await else { return };
                    let _ = plain.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut plain).await;
                });
            }
        });
        Ok(format!("https://127.0.0.1:{port}"))
    }
}

fn openssl(args: &[&str]) -> Result<(), String> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .map_err(|e| format!("the benchmark's TLS endpoints need the openssl command ({e})"))?;
    if !output.status.success() {
        return Err(format!("openssl {}: {}", args[0], String::from_utf8_lossy(&output.stderr).trim()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client that trusts the local CA (as the processes do, through the bundle) reaches the
    /// plain endpoint behind a front, both ways; one that trusts only the system store is refused.
    #[tokio::test]
    async fn a_front_passes_tls_from_a_client_trusting_the_ca_to_the_plain_endpoint() {
        let dir = std::env::temp_dir().join(format!("superpay-tls-{}", std::process::id()));
        let tls = LocalTls::create(&dir, None).unwrap();
        let bundle: Vec<_> = CertificateDer::pem_file_iter(&tls.bundle).unwrap().collect::<Result<_, _>>().unwrap();
        assert!(bundle.len() > 1, "the system's certificates and the CA");
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let behind = format!("http://{}", plain.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = plain.accept().await.unwrap();
            let mut asked = [0u8; 4];
            socket.read_exact(&mut asked).await.unwrap();
            socket.write_all(&[asked.as_slice(), b"-pong"].concat()).await.unwrap();
        });
        let (_stop, shutdown) = watch::channel(false);
        let front = tls.front(&behind, shutdown).await.unwrap();
        let address = front.strip_prefix("https://").unwrap().to_owned();

        let connect = |roots: rustls::RootCertStore| {
            let address = address.clone();
            async move {
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                let tcp = TcpStream::connect(address).await.unwrap();
                connector.connect(rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap(), tcp).await
            }
        };
        let mut trusting = rustls::RootCertStore::empty();
        trusting.add_parsable_certificates(bundle.clone());
        let mut stream = connect(trusting).await.expect("the handshake with the CA trusted");
        stream.write_all(b"ping").await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"ping-pong");

        let mut system = rustls::RootCertStore::empty();
        let system_bundle = CertificateDer::pem_file_iter(SYSTEM_BUNDLE).unwrap().filter_map(Result::ok);
        system.add_parsable_certificates(system_bundle);
        assert!(connect(system).await.is_err(), "the local CA is no public one");
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! PKCS#12 keystores for `keystores.pkcs12`: `keystore.p12` (key + chain) and `truststore.p12`
//! (the CA), encrypted with PBES2/AES-256 and an HMAC-SHA256 MAC (the library's defaults; the
//! legacy RC2/3DES profile is not built in).

use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, LocalKeyId, PrivateKey as P12Key, PrivateKeyChain};

use super::key::PrivateKey;

/// Why a keystore could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the PKCS#12 keystore: {0}")]
pub struct Pkcs12Error(String);

fn certificate(der: &[u8]) -> Result<Certificate, Pkcs12Error> {
    Certificate::from_der(der).map_err(|e| Pkcs12Error(e.to_string()))
}

/// `keystore.p12`: the key with the leaf and its chain, alias `certificate`.
pub fn keystore(
    key: &PrivateKey,
    leaf: &[u8],
    chain: &[Vec<u8>],
    password: &str,
) -> Result<Vec<u8>, Pkcs12Error> {
    let p12_key = P12Key::from_der(key.pkcs8_der()).map_err(|e| Pkcs12Error(e.to_string()))?;
    let mut certs = vec![certificate(leaf)?];
    for der in chain {
        certs.push(certificate(der)?);
    }
    let id = crate::pki::chain::sha256_hex(leaf).into_bytes();
    let mut store = KeyStore::new();
    store.add_entry(
        "certificate",
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(LocalKeyId(id), p12_key, certs)),
    );
    store
        .writer(password)
        .write()
        .map_err(|e| Pkcs12Error(e.to_string()))
}

/// `truststore.p12`: the CA certificate(s) as trusted entries.
pub fn truststore(ca: &[Vec<u8>], password: &str) -> Result<Vec<u8>, Pkcs12Error> {
    let mut store = KeyStore::new();
    for (i, der) in ca.iter().enumerate() {
        store.add_entry(&format!("ca-{i}"), KeyStoreEntry::Certificate(certificate(der)?));
    }
    store
        .writer(password)
        .write()
        .map_err(|e| Pkcs12Error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use p12_keystore::Pkcs12ImportPolicy;
    use rcgen::CertificateParams;

    use super::*;
    use crate::pki::key::KeyAlgorithm;

    #[test]
    fn keystore_round_trips_with_the_password() {
        let key = PrivateKey::generate(KeyAlgorithm::EcdsaP256).unwrap();
        let signer = crate::pki::csr::signer(&key).unwrap();
        let cert = CertificateParams::new(vec!["a.example.com".to_owned()])
            .unwrap()
            .self_signed(&signer)
            .unwrap();
        let bytes = keystore(&key, cert.der(), &[], "changeit").unwrap();
        let store = KeyStore::from_pkcs12(&bytes, "changeit", Pkcs12ImportPolicy::default()).unwrap();
        let (_, chain) = store.private_key_chain().unwrap();
        assert_eq!(chain.certs()[0].as_der(), cert.der().as_ref());
        assert_eq!(chain.key().as_der(), key.pkcs8_der());
        assert!(KeyStore::from_pkcs12(&bytes, "wrong", Pkcs12ImportPolicy::default()).is_err());
        let trust = truststore(&[cert.der().to_vec()], "changeit").unwrap();
        assert!(KeyStore::from_pkcs12(&trust, "changeit", Pkcs12ImportPolicy::default()).is_ok());
    }
}

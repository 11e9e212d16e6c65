//! TEMP placeholder until the CertMgmt sync branch lands.

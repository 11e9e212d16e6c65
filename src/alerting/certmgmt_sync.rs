//! TEMP
use crate::{backend::certmgmt::{CertMgmtClient, CertMgmtError}, crd::v1alpha1::alert_config::{AlertConfigSpec, CertMgmtSync, GeneratedAlertSummary}};
/// TEMP
pub struct DesiredAlerting;
/// TEMP
pub struct Pushed { pub email_list_id: Option<i64>, pub corrected: Vec<String> }
/// TEMP
pub struct Poll { pub new_alerts: Vec<GeneratedAlertSummary>, pub high_water: jiff::Timestamp }
/// TEMP
pub fn desired_from_spec(_n: &str, _s: &AlertConfigSpec) -> Option<DesiredAlerting> { None }
/// TEMP
pub fn list_name(n: &str, _s: &CertMgmtSync) -> String { n.to_owned() }
/// TEMP
pub async fn push(_c: &CertMgmtClient, _d: &DesiredAlerting, _k: Option<i64>) -> Result<Pushed, CertMgmtError> { todo!() }
/// TEMP
pub async fn read_alerts(_c: &CertMgmtClient, _s: Option<jiff::Timestamp>, _r: &[GeneratedAlertSummary], now: jiff::Timestamp) -> Result<Poll, CertMgmtError> { Ok(Poll { new_alerts: vec![], high_water: now }) }
/// TEMP
pub async fn teardown(_c: &CertMgmtClient, _n: &str, _k: Option<i64>) -> Result<Vec<String>, CertMgmtError> { Ok(vec![]) }

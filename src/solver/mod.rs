//! Answering domain control validation challenges. These run on **every** replica, leader or
//! standby, because the route that reaches the operator (an Ingress, a Service) may pick any pod:
//! they read the challenges from a watch of DomainValidations, which only the leader writes.

pub mod dns;
pub mod http;

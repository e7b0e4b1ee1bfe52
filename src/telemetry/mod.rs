//! pillion's own telemetry: the metrics registry every part registers into (`metrics`), the
//! standard process metrics (`process`), and pillion's own log output (`logging`).

pub mod logging;
pub mod metrics;
pub mod process;

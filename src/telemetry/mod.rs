//! pillion's own telemetry: the metrics registry every part registers into (`metrics`), the
//! standard process metrics (`process`), pillion's own log output (`logging`), and the
//! OpenTelemetry span export (`traces`) and context propagation (`propagation`) of the proxy.

pub mod logging;
pub mod metrics;
pub mod process;
pub mod propagation;
pub mod settings;
pub mod traces;

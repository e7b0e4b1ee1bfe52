//! The standard process metrics (`process_resident_memory_bytes`, `process_cpu_seconds_total`,
//! `process_open_fds`, ...), read from /proc on every scrape through the `procfs` crate.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads this process's figures on each scrape. Where /proc is unavailable (not Linux), the
/// metrics are simply absent.
#[derive(Debug, Default)]
pub struct ProcessCollector;

struct Sample {
    cpu_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    open_fds: i64,
    max_fds: Option<i64>,
    start_time_seconds: Option<f64>,
}

fn sample() -> Option<Sample> {
    let process = procfs::process::Process::myself().ok()?;
    let stat = process.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    let page_size = procfs::page_size() as i64;
    let open_fds = process.fd_count().ok().map_or(0, |n| n as i64);
    let max_fds = process.limits().ok().and_then(|limits| match limits.max_open_files.soft_limit {
        procfs::process::LimitValue::Value(v) => i64::try_from(v).ok(),
        procfs::process::LimitValue::Unlimited => None,
    });
    let boot_time = procfs::boot_time_secs().ok();
    Some(Sample {
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
        resident_bytes: stat.rss as i64 * page_size,
        virtual_bytes: stat.vsize as i64,
        open_fds,
        max_fds,
        start_time_seconds: boot_time.map(|boot| boot as f64 + stat.starttime as f64 / ticks),
    })
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = sample() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(s.cpu_seconds);
        let help = "Total user and system CPU time spent in seconds";
        cpu.encode(encoder.encode_descriptor("process_cpu_seconds", help, None, cpu.metric_type())?)?;
        gauge(&mut encoder, "process_resident_memory_bytes", "Resident memory size in bytes", s.resident_bytes)?;
        gauge(&mut encoder, "process_virtual_memory_bytes", "Virtual memory size in bytes", s.virtual_bytes)?;
        gauge(&mut encoder, "process_open_fds", "Number of open file descriptors", s.open_fds)?;
        if let Some(max) = s.max_fds {
            gauge(&mut encoder, "process_max_fds", "Maximum number of open file descriptors", max)?;
        }
        if let Some(start) = s.start_time_seconds {
            let metric = ConstGauge::new(start);
            let help = "Start time of the process since unix epoch in seconds";
            metric.encode(encoder.encode_descriptor("process_start_time_seconds", help, None, metric.metric_type())?)?;
        }
        Ok(())
    }
}

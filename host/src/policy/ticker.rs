//! The thread that advances the engine's epoch, which is how a running guest
//! notices its deadline. Stops and joins when dropped.
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

pub struct EpochTicker {
    // Dropping the sender wakes the thread and ends it.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: wasmtime::Engine, tick: Duration) -> std::io::Result<EpochTicker> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fledge-policy-epoch".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread only sleeps and increments a counter; it cannot panic.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn ticker_stops_promptly_when_dropped() {
        // (That it ticks is shown by the runtime's endless-loop test.)
        let engine = wasmtime::Engine::default();
        let ticker = EpochTicker::start(engine, Duration::from_secs(30)).unwrap();
        let started = Instant::now();
        drop(ticker);
        // Dropping wakes the thread mid-tick instead of waiting the tick out.
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

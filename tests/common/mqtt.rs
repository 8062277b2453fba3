//! Helpers for the edge-module suite (`tests/edge/`): a real mosquitto broker on a free
//! loopback port, a `scoria edge` child process with its captured log, and MQTT 3.1.1 / 5
//! test clients (rumqttc) that collect what they receive.

#![allow(dead_code)]

use crate::common::{assert_no_panic, scoria_command, strip_ansi};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// A mosquitto broker on 127.0.0.1 with persistence in a temporary directory.
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    conf: PathBuf,
}

impl Broker {
    /// Starts a broker on a free port that lets anyone in.
    pub fn start() -> Broker {
        Broker::start_on(free_port(), "allow_anonymous true\n")
    }

    /// Starts a broker on `port` with `extra` configuration lines.
    pub fn start_on(port: u16, extra: &str) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("scoria-mosquitto-")
            .tempdir()
            .expect("temp dir");
        let conf = dir.path().join("mosquitto.conf");
        // Run as whoever runs the tests: mosquitto started by root otherwise drops to the
        // `mosquitto` user, which cannot write its persistence file into our directory.
        let user = Command::new("id")
            .arg("-un")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "root".into());
        let text = format!(
            "user {user}\n\
             listener {port} 127.0.0.1\n\
             set_tcp_nodelay true\n\
             persistence true\n\
             persistence_location {}/\n\
             autosave_interval 1\n\
             max_inflight_messages 1000\n\
             max_queued_messages 100000\n\
             log_dest file {}/mosquitto.log\n\
             {extra}",
            dir.path().display(),
            dir.path().display()
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let mut broker = Broker {
            child: None,
            port,
            dir,
            conf,
        };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start mosquitto ({}): {e}", mosquitto().display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("mosquitto exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops the broker with SIGTERM (it saves its persistence database) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// SIGHUP: the broker reloads its configuration (ACL file included), keeping connections.
    pub fn reload(&self) {
        let child = self.child.as_ref().expect("a running broker");
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(child.id().to_string())
            .status()
            .expect("kill -HUP");
        assert!(status.success(), "kill -HUP mosquitto: {status}");
    }

    /// Starts the stopped broker again on the same port, with its saved state.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a stopped broker");
        self.launch();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn mosquitto() -> PathBuf {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!("mosquitto is not installed (scripts/install-system-deps installs it)");
}

/// A `scoria edge` child process.
pub struct Edge {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl Edge {
    /// Starts `scoria edge --models REPO ARGS` and waits until it has connected.
    pub fn start(models: &Path, args: &[&str]) -> Edge {
        let mut edge = Edge::spawn(models, args);
        edge.wait_log("connected to", Duration::from_secs(120));
        edge
    }

    /// Starts it without waiting.
    pub fn spawn(models: &Path, args: &[&str]) -> Edge {
        Edge::spawn_with_env(models, args, &[])
    }

    /// [`Edge::spawn`] with extra environment variables.
    pub fn spawn_with_env(models: &Path, args: &[&str], env: &[(&str, &str)]) -> Edge {
        let mut cmd = scoria_command();
        cmd.envs(env.iter().copied());
        cmd.arg("edge")
            .arg("--models")
            .arg(models)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn scoria edge");
        let pipe = child.stderr.take().expect("stderr pipe");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(strip_ansi(&line));
            }
        });
        Edge {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    /// Waits until a log line contains `needle`; panics with the log otherwise.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        self.wait_log_count(needle, 1, timeout);
    }

    /// Waits until `n` log lines contain `needle`.
    pub fn wait_log_count(&mut self, needle: &str, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let count = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(needle))
                .count();
            if count >= n {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "scoria edge exited with {status} before logging '{needle}'; its stderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "scoria edge logged '{needle}' {count} of {n} times in {timeout:?}; its stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// SIGTERM, as a service manager stops it; waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.wait_exit(timeout)
    }

    /// SIGKILL, as a crash or power cut would.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "scoria edge did not exit; its stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if !std::thread::panicking() {
            assert_no_panic(&self.stderr());
        }
    }
}

/// A message a test client received.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    /// The MQTT DUP flag: the broker is resending a message it may have delivered before.
    pub dup: bool,
    pub correlation: Option<Vec<u8>>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "non-JSON on {}: {e}: {}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }
}

enum Note {
    Msg(Received),
    SubAck,
    PubAck,
}

/// An MQTT test client (3.1.1 or 5) that collects every message it receives.
pub struct Peer {
    v4: Option<rumqttc::Client>,
    v5: Option<rumqttc::v5::Client>,
    rx: mpsc::Receiver<Note>,
    /// Messages received and not yet taken.
    inbox: Vec<Received>,
    puback_count: usize,
}

impl Peer {
    /// Connects a client with a persistent session (`clean_session = false`).
    pub fn connect(port: u16, id: &str, v5: bool) -> Peer {
        let (tx, rx) = mpsc::channel();
        let (c4, c5) = if v5 {
            let mut o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
            o.set_clean_start(false)
                .set_session_expiry_interval(Some(3600))
                .set_keep_alive(Duration::from_secs(5))
                .set_max_packet_size(Some(16 << 20));
            let (client, mut conn) = rumqttc::v5::Client::new(o, 100_000);
            std::thread::spawn(move || {
                use rumqttc::v5::mqttbytes::v5::Packet;
                for ev in conn.iter() {
                    let note = match ev {
                        Ok(rumqttc::v5::Event::Incoming(Packet::Publish(p))) => {
                            Note::Msg(Received {
                                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                                payload: p.payload.to_vec(),
                                retain: p.retain,
                                dup: p.dup,
                                correlation: p
                                    .properties
                                    .and_then(|pr| pr.correlation_data)
                                    .map(|c| c.to_vec()),
                            })
                        }
                        Ok(rumqttc::v5::Event::Incoming(Packet::SubAck(_))) => Note::SubAck,
                        Ok(rumqttc::v5::Event::Incoming(Packet::PubAck(_))) => Note::PubAck,
                        Ok(_) => continue,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    };
                    if tx.send(note).is_err() {
                        break;
                    }
                }
            });
            (None, Some(client))
        } else {
            let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
            o.set_clean_session(false)
                .set_keep_alive(Duration::from_secs(5))
                .set_max_packet_size(16 << 20, 16 << 20);
            let (client, mut conn) = rumqttc::Client::new(o, 100_000);
            std::thread::spawn(move || {
                use rumqttc::Packet;
                for ev in conn.iter() {
                    let note = match ev {
                        Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => Note::Msg(Received {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                            dup: p.dup,
                            correlation: None,
                        }),
                        Ok(rumqttc::Event::Incoming(Packet::SubAck(_))) => Note::SubAck,
                        Ok(rumqttc::Event::Incoming(Packet::PubAck(_))) => Note::PubAck,
                        Ok(_) => continue,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(100));
                            continue;
                        }
                    };
                    if tx.send(note).is_err() {
                        break;
                    }
                }
            });
            (Some(client), None)
        };
        Peer {
            v4: c4,
            v5: c5,
            rx,
            inbox: Vec::new(),
            puback_count: 0,
        }
    }

    /// Subscribes to `filter` at QoS 1 and waits for the broker's SubAck.
    pub fn subscribe(&mut self, filter: &str) {
        if let Some(c) = &self.v4 {
            c.subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .expect("subscribe");
        }
        if let Some(c) = &self.v5 {
            c.subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                .expect("subscribe");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Note::SubAck) => return,
                Ok(Note::Msg(m)) => self.inbox.push(m),
                Ok(Note::PubAck) => self.puback_count += 1,
                Err(_) => assert!(Instant::now() < deadline, "no SubAck for {filter}"),
            }
        }
    }

    /// Publishes at QoS 1 (retained when asked); on MQTT 5 with optional response topic and
    /// correlation data.
    pub fn publish(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        retain: bool,
        response: Option<(&str, &[u8])>,
    ) {
        let payload = payload.into();
        if let Some(c) = &self.v4 {
            assert!(response.is_none(), "response topics need MQTT 5");
            c.publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload.clone())
                .expect("publish");
        }
        if let Some(c) = &self.v5 {
            let mut props = rumqttc::v5::mqttbytes::v5::PublishProperties::default();
            if let Some((rt, cd)) = response {
                if !rt.is_empty() {
                    props.response_topic = Some(rt.to_string());
                }
                props.correlation_data = Some(bytes::Bytes::copy_from_slice(cd));
            }
            c.publish_with_properties(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                retain,
                payload,
                props,
            )
            .expect("publish");
        }
    }

    /// Waits until the broker has acknowledged `n` publishes of this client in all.
    pub fn wait_pubacks(&mut self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.puback_count < n {
            self.pump(Duration::from_millis(50));
            assert!(
                Instant::now() < deadline,
                "{} of {n} publishes acknowledged",
                self.puback_count
            );
        }
    }

    fn pump(&mut self, wait: Duration) {
        if let Ok(note) = self.rx.recv_timeout(wait) {
            self.note(note);
            while let Ok(note) = self.rx.try_recv() {
                self.note(note);
            }
        }
    }

    fn note(&mut self, note: Note) {
        match note {
            Note::Msg(m) => self.inbox.push(m),
            Note::PubAck => self.puback_count += 1,
            Note::SubAck => {}
        }
    }

    /// Takes the first received message that `pred` accepts, waiting up to `timeout`.
    pub fn take(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Received) -> bool,
    ) -> Option<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.inbox.iter().position(&pred) {
                return Some(self.inbox.remove(i));
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.pump(Duration::from_millis(20));
        }
    }

    /// Takes every message on `topic` received until `done` says the collection is complete
    /// or `timeout` passes.
    pub fn collect(
        &mut self,
        topic: &str,
        timeout: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        loop {
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.inbox)
                .into_iter()
                .partition(|m| m.topic == topic);
            self.inbox = rest;
            got.extend(mine);
            if done(&got) || Instant::now() >= deadline {
                return got;
            }
            self.pump(Duration::from_millis(20));
        }
    }

    pub fn disconnect(&self) {
        if let Some(c) = &self.v4 {
            let _ = c.disconnect();
        }
        if let Some(c) = &self.v5 {
            let _ = c.disconnect();
        }
    }
}

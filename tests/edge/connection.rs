//! Connecting: refused credentials, an unreachable broker, usage errors, TLS and the IoT Hub
//! preset.

use super::*;

#[test]
fn refused_credentials_exit_with_one_line_reason() {
    let broker = Broker::start_on(free_port(), "allow_anonymous false\n");
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut edge = Edge::spawn(
        repo.path(),
        &[
            "--broker",
            &broker.url(),
            "--model",
            "digits",
            "--client-id",
            "edge-cred",
            "--outbox",
            &outbox_dir(&tmp),
            "--username",
            "u",
            "--password",
            "wrong",
        ],
    );
    let status = edge.wait_exit(WAIT);
    assert_eq!(status.code(), Some(1), "{}", edge.stderr());
    let log = edge.stderr();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains("refused the connection"),
        "{log}"
    );
}

#[test]
fn unreachable_broker_is_retried_until_it_comes_up() {
    let port = free_port();
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("mqtt://127.0.0.1:{port}");
    let mut edge = Edge::spawn(
        repo.path(),
        &[
            "--broker",
            &url,
            "--model",
            "digits",
            "--client-id",
            "edge-late",
            "--outbox",
            &outbox_dir(&tmp),
        ],
    );
    edge.wait_log_count("cannot connect to", 2, WAIT);
    assert!(edge.is_running());
    assert!(edge.stderr().contains("retrying in"), "{}", edge.stderr());
    let broker = Broker::start_on(port, "allow_anonymous true\n");
    edge.wait_log("connected to", WAIT);
    let mut c = Peer::connect(broker.port, "late-client", false);
    c.subscribe("scoria/out/digits");
    c.publish(
        "scoria/in/digits",
        digits_request(1).to_string(),
        false,
        None,
    );
    assert!(
        c.take(WAIT, |m| m.json()["id"] == 1).is_some(),
        "{}",
        edge.stderr()
    );
}

#[test]
fn usage_errors_exit_2_and_bad_settings_exit_1() {
    let out = common::scoria_command()
        .args(["edge", "--model", "digits"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--broker is required"), "{err}");
    let out = common::scoria_command()
        .args(["edge", "--broker", "mqtt://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = common::scoria_command()
        .args([
            "edge", "--broker", "http://x", "--model", "digits", "--models",
        ])
        .arg(common::root().join("models"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("mqtt://"), "{err}");
    // A model the repository does not have is a runtime error: exit 1.
    let out = common::scoria_command()
        .args([
            "edge",
            "--broker",
            "mqtt://127.0.0.1:1",
            "--model",
            "nosuch",
            "--models",
        ])
        .arg(common::root().join("models"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nosuch"), "{err}");
}

/// Bad values of --client-id, --topic-prefix, --telemetry-interval and --model (from flags or
/// the environment) are usage errors: exit code 2 and a line naming the problem, before any
/// connection (they used to panic, or to retry the connection forever).
#[test]
fn invalid_edge_flags_are_usage_errors() {
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    // Nothing listens there: a module that got past its flags would retry forever.
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let outbox = outbox_dir(&tmp);
    let long_id = "x".repeat(70_000);
    // (flags, environment, what the error says)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--client-id", ""], &[], "must not be empty"),
        (&[], &[("SCORIA_CLIENT_ID", "")], "must not be empty"),
        (&["--client-id", &long_id], &[], "at most 65535"),
        (&["--telemetry-interval", "1e300"], &[], "from 0.1 to 86400"),
        (&["--telemetry-interval", "-1"], &[], "positive"),
        (&["--telemetry-interval", "0"], &[], "positive"),
        (&["--telemetry-interval", "0.01"], &[], "from 0.1 to 86400"),
        (
            &[],
            &[("SCORIA_TELEMETRY_INTERVAL", "inf")],
            "from 0.1 to 86400",
        ),
        (&["--topic-prefix", "a/#"], &[], "must not contain '#'"),
        (&["--topic-prefix", "a/+/b"], &[], "must not contain '+'"),
        (&["--topic-prefix", ""], &[], "must not be empty"),
        (&["--topic-prefix", "/"], &[], "must not be empty"),
        (
            &[],
            &[("SCORIA_TOPIC_PREFIX", "x/#")],
            "must not contain '#'",
        ),
        (
            &["--model", "digits:1"],
            &[],
            "--model digits is given more than once",
        ),
        (
            &[],
            &[("SCORIA_EDGE_MODELS", "digits,digits")],
            "more than once",
        ),
    ];
    let mut failures = Vec::new();
    for (extra, env, want) in cases {
        let mut args = vec!["--broker", &url, "--outbox", &outbox];
        if env.iter().all(|(k, _)| *k != "SCORIA_EDGE_MODELS") {
            args.extend(["--model", "digits"]);
        }
        args.extend_from_slice(extra);
        let shown: Vec<String> = extra.iter().map(|a| a.chars().take(20).collect()).collect();
        let mut edge = Edge::spawn_with_env(repo.path(), &args, env);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while edge.is_running() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if edge.is_running() {
            failures.push(format!(
                "{shown:?} {env:?}: still running:\n{}",
                edge.stderr()
            ));
            continue;
        }
        let status = edge.wait_exit(WAIT);
        let log = edge.stderr();
        let first = log.lines().next().unwrap_or_default();
        if status.code() != Some(2)
            || !first.starts_with("error: ")
            || !first.contains(want)
            || log.contains("panicked")
        {
            failures.push(format!(
                "{shown:?} {env:?}: {status}, wanted exit 2 and '{want}' in the first line of:\n{log}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Runs `openssl` with `args` in `dir`; panics with its output on failure.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (scripts/install-system-deps)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mqtts_with_a_ca_file() {
    // A CA and a server certificate for 127.0.0.1 signed by it.
    let pki = tempfile::tempdir().unwrap();
    let d = pki.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=scoria test CA",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    let tls_port = free_port();
    let broker = Broker::start_on(
        free_port(),
        &format!(
            "allow_anonymous true\nlistener {tls_port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n",
            d.display()
        ),
    );
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let ca = d.join("ca.pem").display().to_string();
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    let _edge = Edge::start(
        repo.path(),
        &[
            "--broker",
            &url,
            "--ca-file",
            &ca,
            "--model",
            "digits",
            "--client-id",
            "edge-tls",
            "--outbox",
            &outbox_dir(&tmp),
        ],
    );
    let mut c = Peer::connect(broker.port, "tls-client", false);
    c.subscribe("scoria/out/digits");
    c.publish(
        "scoria/in/digits",
        digits_request(1).to_string(),
        false,
        None,
    );
    assert!(c.take(WAIT, |m| m.json()["id"] == 1).is_some());
    // A broker certificate the CA file does not vouch for is not trusted.
    let other = tempfile::tempdir().unwrap();
    openssl(
        other.path(),
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "k",
            "-out",
            "other.pem",
            "-days",
            "2",
            "-subj",
            "/CN=other",
        ],
    );
    let other_ca = other.path().join("other.pem").display().to_string();
    let tmp2 = tempfile::tempdir().unwrap();
    let mut untrusting = Edge::spawn(
        repo.path(),
        &[
            "--broker",
            &url,
            "--ca-file",
            &other_ca,
            "--model",
            "digits",
            "--client-id",
            "edge-tls2",
            "--outbox",
            &outbox_dir(&tmp2),
        ],
    );
    untrusting.wait_log("cannot connect to", WAIT);
    assert!(
        untrusting.stderr().to_lowercase().contains("certificate"),
        "{}",
        untrusting.stderr()
    );
}

#[test]
fn iothub_preset_topics_method_and_twin_through_a_real_broker() {
    // mosquitto stands in for IoT Hub: it checks no SAS token, but carries the preset's
    // topics, so inputs, events, the direct method and the twin are exercised end to end.
    let broker = Broker::start();
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let conn = "HostName=hub.azure-devices.net;DeviceId=dev1;ModuleId=scoria;SharedAccessKey=c2NvcmlhLXRlc3Qta2V5LTAxMjM0NTY3ODkwMTIzNDU2Nzg5";
    let edge = Edge::start(
        repo.path(),
        &[
            "--broker",
            &broker.url(),
            "--preset",
            "iothub",
            "--iothub-connection-string",
            conn,
            "--model",
            "digits",
            "--outbox",
            &outbox_dir(&tmp),
        ],
    );
    assert!(
        edge.stderr().contains("as 'dev1/scoria'"),
        "{}",
        edge.stderr()
    );
    let mut c = Peer::connect(broker.port, "hub-side", false);
    c.subscribe("devices/dev1/modules/scoria/messages/events/#");
    c.subscribe("$iothub/methods/res/#");
    c.subscribe("$iothub/twin/PATCH/properties/reported/#");
    c.publish(
        "devices/dev1/modules/scoria/inputs/digits/",
        digits_request(1).to_string(),
        false,
        None,
    );
    let got = c
        .take(WAIT, |m| m.topic.contains("type=result"))
        .expect("result event");
    assert_eq!(
        got.topic,
        "devices/dev1/modules/scoria/messages/events/$.on=results&type=result&model=digits&$.ct=application%2Fjson&$.ce=utf-8"
    );
    assert_eq!(got.json()["id"], 1);
    c.publish(
        "$iothub/methods/POST/score/?$rid=42",
        json!({"model": "digits", "data": digits_request(2)["data"]}).to_string(),
        false,
        None,
    );
    let got = c
        .take(WAIT, |m| m.topic.starts_with("$iothub/methods/res/"))
        .expect("method response");
    assert_eq!(got.topic, "$iothub/methods/res/200/?$rid=42");
    assert!(
        got.json()["result"]["predictions"].is_array(),
        "{}",
        got.json()
    );
    c.publish(
        "$iothub/twin/PATCH/properties/desired/?$version=5",
        json!({"telemetry_interval_s": 0.5, "$version": 5}).to_string(),
        false,
        None,
    );
    let got = c
        .take(WAIT, |m| {
            m.topic
                .starts_with("$iothub/twin/PATCH/properties/reported/")
        })
        .expect("reported patch");
    let rep = got.json();
    assert_eq!(rep["desired_version"], 5, "{rep}");
    assert_eq!(rep["status"], "applied", "{rep}");
    assert!(rep.get("$version").is_none(), "{rep}");
    let tel = c
        .take(WAIT, |m| m.topic.contains("type=telemetry"))
        .expect("telemetry event");
    assert_eq!(tel.json()["models"]["digits"]["in"], 2, "{}", tel.json());
}

/// A stand-in for IoT Edge's workload API on a Unix socket: answers every sign request with
/// a fixed digest and records the data it was asked to sign.
fn workload_api(sock: &std::path::Path) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use base64::Engine;
    use std::io::{BufRead, Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(sock).unwrap();
    let signed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&signed);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut length = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let answer = if line.starts_with("POST /modules/scoria/genid/gen-1/sign?api-version=") {
                let req: Value = serde_json::from_slice(&body).unwrap();
                let b64 = base64::engine::general_purpose::STANDARD;
                let data = b64.decode(req["data"].as_str().unwrap()).unwrap();
                seen.lock().unwrap().push(String::from_utf8(data).unwrap());
                let digest = r#"{"digest":"c2lnbmVk"}"#;
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{digest}",
                    digest.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
            };
            stream.write_all(answer.as_bytes()).unwrap();
        }
    });
    signed
}

#[test]
fn iothub_preset_under_iot_edge_signs_through_the_workload_api() {
    let broker = Broker::start();
    let repo = repo_with(&["digits"]);
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("workload.sock");
    let workload_uri = format!("unix://{}", sock.display());
    let env = [
        ("IOTEDGE_IOTHUBHOSTNAME", "hub.azure-devices.net"),
        ("IOTEDGE_DEVICEID", "dev1"),
        ("IOTEDGE_MODULEID", "scoria"),
        ("IOTEDGE_MODULEGENERATIONID", "gen-1"),
        ("IOTEDGE_WORKLOADURI", workload_uri.as_str()),
    ];
    let outbox = outbox_dir(&tmp);
    let args = [
        "--broker",
        &broker.url(),
        "--preset",
        "iothub",
        "--model",
        "digits",
        "--outbox",
        &outbox,
    ];

    // No workload API listening: the module cannot get a token and says so in one line.
    let mut failing = Edge::spawn_with_env(repo.path(), &args, &env);
    assert_eq!(failing.wait_exit(WAIT).code(), Some(1));
    let err = failing.stderr();
    assert!(
        err.contains("cannot make a SAS token") && err.contains(&workload_uri),
        "{err}"
    );

    let signed = workload_api(&sock);
    let mut edge = Edge::spawn_with_env(repo.path(), &args, &env);
    edge.wait_log("connected to", WAIT);
    let mut c = Peer::connect(broker.port, "hub-side", false);
    c.subscribe("devices/dev1/modules/scoria/messages/events/#");
    c.publish(
        "devices/dev1/modules/scoria/inputs/digits/",
        digits_request(1).to_string(),
        false,
        None,
    );
    let got = c
        .take(WAIT, |m| m.topic.contains("type=result"))
        .expect("result event");
    assert_eq!(got.json()["id"], 1);
    // The module had its SAS token's string signed: "{url-encoded resource}\n{expiry}",
    // expiring after the default --sas-ttl of 24 h.
    let signed = signed.lock().unwrap().clone();
    assert_eq!(signed.len(), 1, "{signed:?}");
    let (sr, se) = signed[0].split_once('\n').expect("resource and expiry");
    assert_eq!(
        sr,
        "hub.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fscoria"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let se: u64 = se.parse().unwrap();
    assert!(
        se > now + 86_400 - 120 && se <= now + 86_400,
        "expiry {se}, now {now}"
    );
}

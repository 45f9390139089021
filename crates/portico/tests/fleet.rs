//! Scale-out: session ids that seal the session's state, so every replica with the same
//! `config.session.key` serves every session (issue #12).

mod common;

use common::*;
use serde_json::{Value, json};

const KEY: &str = "4f1c2a9e8b7d6c5a4f3e2d1c0b9a8f7e6d5c4b3a29180716f5e4d3c2b1a09f8e";
const OTHER_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Two HTTP fixture targets (`b` pages its lists by 4) and an optional stdio one, on `/mcp`.
fn fleet_config(b: &str, c: &str, stdio: bool, session: &str) -> String {
    let mut targets = http_target("b", b) + &http_target("c", c);
    if stdio {
        targets += &stdio_target("s", &[]);
    }
    format!(
        "config:\n  adminAddr: 127.0.0.1:0\n  statsAddr: 127.0.0.1:0\n  readinessAddr: 127.0.0.1:0\n{session}{}",
        config_with_targets(&targets, "")
    )
}

fn keyed(key: &str) -> String {
    format!("  session:\n    key: \"{key}\"\n")
}

async fn fixtures() -> (HttpFixture, HttpFixture) {
    let b = HttpFixture::start(&["--name", "b", "--page-size", "4"]).await;
    let c = HttpFixture::start(&["--name", "c"]).await;
    (b, c)
}

/// The same session, as a client of another replica.
fn on(gateway: &Gateway, session: &Client) -> Client {
    let mut client = Client::new(gateway.url("/mcp"));
    client.session = session.session.clone();
    client
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_moves_between_replicas_that_share_the_key() {
    let (b, c) = fixtures().await;
    let yaml = fleet_config(&b.url, &c.url, false, &keyed(KEY));
    let replicas = [
        Gateway::start(&yaml).await,
        Gateway::start(&yaml).await,
        Gateway::start(&yaml).await,
    ];
    assert!(
        replicas[0]
            .log_with("sessions are portable")
            .await
            .contains("config.session.key")
    );
    let first = Client::connect(replicas[0].url("/mcp")).await;
    let mut clients: Vec<Client> = replicas.iter().map(|r| on(r, &first)).collect();

    // Every page of the list from a different replica than the one before.
    let (mut tools, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
    loop {
        let params = cursor.as_ref().map_or(json!({}), |c| json!({"cursor": c}));
        let reply = clients[pages % 3].request("tools/list", params).await;
        assert_eq!(reply.status, 200, "{:?}", reply.response);
        let result = &reply.response["result"];
        tools.extend(result["tools"].as_array().cloned().unwrap_or_default());
        pages += 1;
        cursor = result["nextCursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    assert!(pages > 3, "b pages its tools by 4: {pages} pages");
    let names = names(&tools, "name");
    assert!(names.contains(&"b_echo".to_string()) && names.contains(&"c_echo".to_string()));

    assert_eq!(
        text(
            &clients[1]
                .call("b_echo", json!({"message": "on two"}))
                .await
        ),
        "on two"
    );
    assert_eq!(
        text(
            &clients[2]
                .call("c_echo", json!({"message": "on three"}))
                .await
        ),
        "on three"
    );
    let prompt = clients[1]
        .request(
            "prompts/get",
            json!({"name": "c_test_prompt_with_arguments", "arguments": {"arg1": "x", "arg2": "y"}}),
        )
        .await;
    assert_eq!(
        prompt.response["result"]["messages"][0]["content"]["text"],
        "Prompt with arguments: arg1='x', arg2='y'"
    );
    let read = clients[2]
        .request("resources/read", json!({"uri": "b+test://static-text"}))
        .await;
    assert_eq!(
        read.response["result"]["contents"][0]["text"],
        "This is the content of the static text resource.",
        "{:?}",
        read.response
    );

    // Sampling: the target asks on replica one's stream; the answer is POSTed to replica two.
    let (asked, result) = call_answering_on(
        &clients[0],
        &clients[1],
        "b_test_sampling",
        json!({"prompt": "across"}),
        json!({"role": "assistant", "content": {"type": "text", "text": "answered on two"}, "model": "m"}),
    )
    .await;
    assert_eq!(asked["method"], "sampling/createMessage");
    assert_eq!(
        text(&result["result"]),
        "LLM response: answered on two",
        "{result}"
    );

    // The HTTP targets were not initialized again on the replicas that resumed the session.
    for replica in &replicas[1..] {
        assert!(replica.log_count("session resumed from its id") >= 1);
        assert_eq!(
            replica.log_count("target connected"),
            0,
            "{}",
            replica.log_text()
        );
    }

    // DELETE on replica three ends it there (and at the targets).
    let deleted = clients[2]
        .http
        .delete(clients[2].url.clone())
        .header("mcp-session-id", first.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let after = clients[2].request("ping", json!({})).await;
    assert_eq!(after.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn stdio_targets_start_afresh_on_the_replica_that_resumes() {
    let (b, c) = fixtures().await;
    let yaml = fleet_config(&b.url, &c.url, true, &keyed(KEY));
    let one = Gateway::start(&yaml).await;
    let two = Gateway::start(&yaml).await;
    let first = Client::connect(one.url("/mcp")).await;
    let mut second = on(&two, &first);
    assert_eq!(
        text(&second.call("s_echo", json!({"message": "fresh"})).await),
        "fresh"
    );
    assert_eq!(two.children().len(), 1, "one stdio process on replica two");
    assert_eq!(
        text(&second.call("b_echo", json!({"message": "kept"})).await),
        "kept"
    );
}

/// A session id is refused (404, as an unknown session) by a replica with another key, when changed
/// by one bit, on another route, and once its lifetime is over; a rotated key still opens it.
#[tokio::test(flavor = "multi_thread")]
async fn foreign_tampered_other_route_and_expired_ids_are_unknown_sessions() {
    let (b, c) = fixtures().await;
    let short = format!("  session:\n    key: \"{KEY}\"\n    lifetime: 3s\n");
    let yaml = fleet_config(&b.url, &c.url, false, &short);
    let maker = Gateway::start(&yaml).await;
    let first = Client::connect(maker.url("/mcp")).await;
    let id = first.session.clone().unwrap();

    let foreign = Gateway::start(&fleet_config(&b.url, &c.url, false, &keyed(OTHER_KEY))).await;
    assert_eq!(
        on(&foreign, &first).request("ping", json!({})).await.status,
        404
    );

    let rotated = format!("  session:\n    key: \"{OTHER_KEY}\"\n    previousKeys: [\"{KEY}\"]\n");
    let rotated = Gateway::start(&fleet_config(&b.url, &c.url, false, &rotated)).await;
    let mut after_rotation = on(&rotated, &first);
    assert_eq!(
        text(
            &after_rotation
                .call("b_echo", json!({"message": "rotated"}))
                .await
        ),
        "rotated"
    );

    let mut tampered = on(&maker, &first);
    let mut bytes = id.clone().into_bytes();
    let middle = bytes.len() / 2;
    bytes[middle] = if bytes[middle] == b'A' { b'B' } else { b'A' };
    tampered.session = Some(String::from_utf8(bytes).unwrap());
    let fresh = Gateway::start(&yaml).await;
    let mut tampered_elsewhere = on(&fresh, &tampered);
    assert_eq!(
        tampered_elsewhere.request("ping", json!({})).await.status,
        404
    );

    let two_routes = yaml.replace(
        "    - name: test\n      matches:\n      - path: {pathPrefix: /mcp}\n",
        "    - name: other\n      matches:\n      - path: {pathPrefix: /mcp}\n",
    );
    assert_ne!(two_routes, yaml);
    let other_route = Gateway::start(&two_routes).await;
    assert_eq!(
        on(&other_route, &first)
            .request("ping", json!({}))
            .await
            .status,
        404
    );

    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    let late = Gateway::start(&yaml).await;
    assert_eq!(
        on(&late, &first).request("ping", json!({})).await.status,
        404
    );
    // The replica that holds it keeps serving it (idle expiry is per process).
    assert_eq!(
        on(&maker, &first).request("ping", json!({})).await.status,
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_key_sessions_stay_in_their_process_and_the_log_says_so() {
    let (b, c) = fixtures().await;
    let yaml = fleet_config(&b.url, &c.url, false, "");
    let one = Gateway::start(&yaml).await;
    let two = Gateway::start(&yaml).await;
    let line = one.log_with("sessions are not portable").await;
    assert!(line.contains("PORTICO_SESSION_KEY"), "{line}");
    let first = Client::connect(one.url("/mcp")).await;
    assert_eq!(
        on(&two, &first).request("ping", json!({})).await.status,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_can_come_from_the_environment() {
    let (b, c) = fixtures().await;
    let yaml = fleet_config(&b.url, &c.url, false, "");
    let env = [("PORTICO_SESSION_KEY", KEY)];
    let one = Gateway::start_with_env(&yaml, &env).await;
    let two = Gateway::start_with_env(&yaml, &env).await;
    let first = Client::connect(one.url("/mcp")).await;
    assert_eq!(
        on(&two, &first).request("ping", json!({})).await.status,
        200
    );
}

#[test]
fn a_malformed_key_is_a_config_error() {
    let yaml = fleet_config(
        "http://127.0.0.1:9/mcp",
        "http://127.0.0.1:9/mcp",
        false,
        "  session:\n    key: \"abc\"\n    previousKeys: [\"zz\"]\n",
    );
    let error = validate_failure(&yaml);
    assert!(error.contains("config.session.key"), "{error}");
    assert!(error.contains("64 hex characters"), "{error}");
    assert!(error.contains("config.session.previousKeys[0]"), "{error}");
    assert!(error.contains("openssl rand -hex 32"), "{error}");
}

fn signal(gateway: &Gateway, name: &str) {
    let pid = gateway.child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// nginx, round robin over `replicas`, without keep-alive to them (each request opens its own
/// connection, so consecutive requests of one session land on different replicas). Nor to the
/// client: a reload closes the old worker's idle client connections, and a client that sent its next
/// request into one at that moment got a read error (a race of nginx and the client, not of Portico;
/// a Kubernetes Service, which forwards connections, has no such reload).
struct Nginx {
    child: tokio::process::Child,
    url: String,
    dir: std::path::PathBuf,
    port: u16,
}

const NGINX: [&str; 2] = ["/usr/sbin/nginx", "/usr/bin/nginx"];

fn nginx_binary() -> &'static str {
    NGINX
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nginx is installed (scripts/setup.sh installs it)")
}

impl Nginx {
    async fn start(replicas: &[u16]) -> Self {
        let dir = std::env::temp_dir().join(format!("portico-nginx-{}", free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        Self::write_conf(&dir, port, replicas);
        let child = tokio::process::Command::new(nginx_binary())
            .args(["-p", dir.to_str().unwrap(), "-c", "nginx.conf"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nginx");
        let url = format!("http://127.0.0.1:{port}/mcp");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Self {
            child,
            url,
            dir,
            port,
        }
    }

    fn write_conf(dir: &std::path::Path, port: u16, replicas: &[u16]) {
        let servers: String = replicas
            .iter()
            .map(|p| format!("    server 127.0.0.1:{p} max_fails=0;\n"))
            .collect();
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  log_format fleet '$request_method $status $upstream_addr';\n  access_log {d}/access.log fleet;\n\
             keepalive_timeout 0;\n\
             client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             upstream portico {{\n{servers}  }}\n\
             server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://portico;\n\
             proxy_http_version 1.1;\n      proxy_buffering off;\n      proxy_request_buffering off;\n\
             proxy_read_timeout 300s;\n      proxy_next_upstream error timeout;\n    }}\n  }}\n}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    }

    /// Takes replicas out of (or back into) the rotation, as an orchestrator does around a restart
    /// (Kubernetes: the pod leaves the Service's endpoints), with a graceful `nginx -s reload`.
    async fn set_replicas(&self, replicas: &[u16]) {
        Self::write_conf(&self.dir, self.port, replicas);
        let status = tokio::process::Command::new(nginx_binary())
            .args([
                "-p",
                self.dir.to_str().unwrap(),
                "-c",
                "nginx.conf",
                "-s",
                "reload",
            ])
            .status()
            .await
            .unwrap();
        assert!(status.success());
        // The new worker takes over once the master has read the config.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// The replica addresses of the POSTs nginx passed on, in order.
    fn upstreams_of_posts(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("POST "))
            .filter_map(|l| l.split(' ').nth(2).map(str::to_string))
            .collect()
    }
}

impl Drop for Nginx {
    /// SIGTERM, so the master stops its worker too (after SIGKILL the worker would live on).
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            for _ in 0..50 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three replicas on fixed ports (so one can be restarted on its address) with one session key.
async fn replicas(b: &HttpFixture, c: &HttpFixture) -> (String, Vec<u16>, Vec<Gateway>) {
    let yaml = fleet_config(&b.url, &c.url, false, &keyed(KEY));
    let (mut ports, mut gateways, mut failures) = (Vec::new(), Vec::new(), 0);
    while gateways.len() < 3 {
        // A port found free may be taken by a test running alongside before the gateway binds it:
        // another one is picked then.
        let port = free_port();
        let fixed = yaml.replacen("port: PORT", &format!("port: {port}"), 1);
        match Gateway::try_start(&fixed, &[]).await {
            Ok(gateway) => {
                ports.push(port);
                gateways.push(gateway);
            }
            Err(logs) if failures < 10 => {
                failures += 1;
                eprintln!("replica on port {port} did not start: {logs:?}")
            }
            Err(logs) => panic!("no replica started: {logs:?}"),
        }
    }
    (yaml, ports, gateways)
}

/// The Python SDK client calling `b_echo` through `url` until [`CallingClient::stop`].
struct CallingClient {
    stop: std::path::PathBuf,
    run: tokio::task::JoinHandle<std::process::Output>,
}

impl CallingClient {
    fn start(tools: &std::path::Path, url: &str) -> Self {
        let stop = std::env::temp_dir().join(format!("portico-fleet-stop-{}", free_port()));
        let (tools, url, flag) = (tools.to_path_buf(), url.to_string(), stop.clone());
        let run = tokio::spawn(async move {
            fleet_client(&tools, &[&url, "until", flag.to_str().unwrap()]).await
        });
        Self { stop, run }
    }

    /// Ends the calls; their summary.
    async fn stop(self) -> (Value, std::process::Output) {
        std::fs::write(&self.stop, "").unwrap();
        let output = self.run.await.unwrap();
        let _ = std::fs::remove_file(&self.stop);
        (calls_summary(&output), output)
    }
}

/// The official Python SDK through nginx (round robin) to three replicas: a whole session whose
/// requests land on every replica, including a sampling round trip.
#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_session_across_three_replicas_behind_nginx() {
    let Some(tools) = interop_tools() else { return };
    let (b, c) = fixtures().await;
    let (_, ports, _gateways) = replicas(&b, &c).await;
    let nginx = Nginx::start(&ports).await;
    let output = fleet_client(&tools, &[&nginx.url, "session"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("fleet client: ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let upstreams = nginx.upstreams_of_posts();
    for port in &ports {
        let on_it = upstreams
            .iter()
            .filter(|u| u.ends_with(&format!(":{port}")))
            .count();
        assert!(
            on_it >= 3,
            "replica {port} served {on_it} POSTs: {upstreams:?}"
        );
    }
}

/// Waits until the client's session is calling (the Python interpreter may take a while to start).
async fn wait_for_calls(gateways: &[Gateway]) {
    for _ in 0..300 {
        if gateways
            .iter()
            .any(|g| g.log_count("method=\"tools/call\"") > 0)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the client never called");
}

/// A replica killed (SIGKILL) in the middle of a session: the session carries on through the others,
/// and at most the call that was on the killed replica fails.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_replica_costs_at_most_the_call_it_was_serving() {
    let Some(tools) = interop_tools() else { return };
    let (b, c) = fixtures().await;
    let (_, ports, mut gateways) = replicas(&b, &c).await;
    let nginx = Nginx::start(&ports).await;
    let client = CallingClient::start(&tools, &nginx.url);
    wait_for_calls(&gateways).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    signal(&gateways[1], "KILL");
    let _ = gateways[1].child.wait().await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let (summary, _) = client.stop().await;
    eprintln!("calls with a replica killed: {summary}");
    let failed = summary["failed"].as_array().unwrap();
    assert!(failed.len() <= 1, "{summary}");
    assert!(summary["ok"].as_u64().unwrap() > 20, "{summary}");
}

/// A rolling restart under load, as an orchestrator runs one: each replica in turn is taken out of the
/// load balancer, SIGTERMed (it drains), started again on its address and put back, while a client
/// calls through nginx; no call fails, and the restarted replicas resume the session from its id.
#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_under_load_loses_no_call() {
    let Some(tools) = interop_tools() else { return };
    let (b, c) = fixtures().await;
    let (yaml, ports, mut gateways) = replicas(&b, &c).await;
    let nginx = Nginx::start(&ports).await;
    let client = CallingClient::start(&tools, &nginx.url);
    wait_for_calls(&gateways).await;
    for (i, port) in ports.iter().enumerate() {
        let others: Vec<u16> = ports.iter().copied().filter(|p| p != port).collect();
        nginx.set_replicas(&others).await;
        signal(&gateways[i], "TERM");
        let status = gateways[i].child.wait().await.unwrap();
        assert_eq!(status.code(), Some(0));
        let fixed = yaml.replacen("port: PORT", &format!("port: {port}"), 1);
        gateways[i] = Gateway::start(&fixed).await;
        nginx.set_replicas(&ports).await;
    }
    // The calls go on until every restarted replica has served the session (resumed from its id).
    let mut all_resumed = false;
    for _ in 0..300 {
        all_resumed = gateways
            .iter()
            .all(|g| g.log_count("session resumed from its id") > 0);
        if all_resumed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (summary, output) = client.stop().await;
    let upstreams = nginx.upstreams_of_posts();
    let served: Vec<(u16, usize, usize)> = ports
        .iter()
        .zip(&gateways)
        .map(|(port, g)| {
            let posts = upstreams
                .iter()
                .filter(|u| u.ends_with(&format!(":{port}")))
                .count();
            (*port, posts, g.log_count("session resumed from its id"))
        })
        .collect();
    assert!(
        all_resumed,
        "a restarted replica never served the session (port, POSTs, resumed): {served:?}\n{}",
        String::from_utf8_lossy(&output.stdout),
    );
    eprintln!("calls through a rolling restart: {summary}");
    assert_eq!(
        summary["failed"],
        serde_json::json!([]),
        "{summary}\nnginx: {}",
        nginx.errors()
    );
    assert!(summary["ok"].as_u64().unwrap() > 20, "{summary}");
}

/// The caller a session is bound to is sealed in its id: another replica serves it to that caller
/// only (anyone else, anonymous included, gets 404).
#[tokio::test(flavor = "multi_thread")]
async fn another_replica_serves_a_session_to_its_caller_only() {
    let (b, c) = fixtures().await;
    let issuer = Issuer::new();
    let yaml = fleet_config(&b.url, &c.url, false, &keyed(KEY)).replace(
        "    - name: test\n",
        &format!(
            "    - name: test\n      policies:\n{}",
            issuer.policy("optional")
        ),
    );
    let one = Gateway::start(&yaml).await;
    let two = Gateway::start(&yaml).await;
    let (ada, bob) = (issuer.token("ada"), issuer.token("bob"));
    let session = session_as(&one.url("/mcp"), &ada).await;
    let url = two.url("/mcp");
    assert_eq!(
        ping_status(&url, &session, Some(&bob)).await,
        404,
        "another caller"
    );
    assert_eq!(
        ping_status(&url, &session, None).await,
        404,
        "an anonymous caller"
    );
    assert_eq!(
        ping_status(&url, &session, Some(&ada)).await,
        200,
        "its owner, on another replica"
    );
    assert_eq!(
        ping_status(&url, &session, Some(&bob)).await,
        404,
        "another caller, once resumed"
    );
}

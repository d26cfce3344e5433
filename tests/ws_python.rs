//! A WebSocket client we did not write: Python's `websockets`, as in seed
//! 002's test script, receives the snapshot and an update.

mod support;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use support::Daemon;

const CLIENT: &str = r#"
import asyncio, json, sys, websockets
async def main():
    async with websockets.connect(sys.argv[1]) as ws:
        for _ in range(2):
            print(json.dumps(json.loads(await asyncio.wait_for(ws.recv(), 10))), flush=True)
asyncio.run(main())
"#;

#[test]
fn python_websockets_gets_snapshot_and_update() {
    let have = support::runs("python3", &["-c", "import websockets"]);
    if !support::require("python3 with websockets", have) {
        return;
    }
    let d = Daemon::start(&[]);
    d.udp(br#"{"type":"heartbeat","worker_id":"py","cpu_usage":1}"#);
    d.wait_applied("py", 1);
    // Enough workers that the snapshot goes out as one large raw frame.
    let pad = "p".repeat(300);
    for i in 0..200 {
        d.udp(
            format!(r#"{{"type":"heartbeat","worker_id":"pad{i}","labels":{{"pad":"{pad}"}}}}"#)
                .as_bytes(),
        );
    }
    d.wait_for("padding", |d| d.json("/health")["frames"]["applied"] == 201);
    let mut child = Command::new("python3")
        .args(["-c", CLIENT, &format!("ws://{}/ws/telemetry", d.http)])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let snap: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["workers"]["py"]["cpu_usage"], 1.0);
    assert_eq!(snap["workers"].as_object().unwrap().len(), 201);
    d.udp(br#"{"type":"heartbeat","worker_id":"py","cpu_usage":55}"#);
    let up: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(up["type"], "update");
    assert_eq!(up["workers"]["py"]["cpu_usage"], 55.0);
    assert!(child.wait().unwrap().success());
}

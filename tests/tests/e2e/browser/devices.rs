//! An incident on more devices than one page (a worm across a fleet), in a real
//! headless Chromium: the assets tab says which devices it shows of how many and
//! pages through them 200 at a time (issue 20 item 1).

use std::time::{Duration, Instant};

use ring::rand::SystemRandom;
use ward_collector::store::prelude::*;
use ward_collector::store::{AlertSource, NewDevice, SourcedAlert, Store};
use ward_protocol::{DeviceId, Entity, Inventory, Severity, SigningKey};
use ward_tests::browser::{Browser, chromium_path};
use ward_tests::{Collector, now_ms};

use crate::browser::console::sign_in;
use crate::incidents::{feed, import, rule};

const DEVICES: usize = 205;

/// Registers `n` devices in the collector's database as enrollment does (the
/// enrollment protocol itself is tested elsewhere; 205 handshakes would be the test).
fn register(collector: &Collector, n: usize) -> Vec<String> {
    let mut store = Store::open(&collector.data_dir().join("ward.db")).unwrap();
    let rng = SystemRandom::new();
    let secret = [9u8; 32];
    let now = now_ms();
    store.create_enroll_token(&secret, n as u32, now, now + 60_000).unwrap();
    (0..n)
        .map(|i| {
            let id = DeviceId::generate(now, &rng).unwrap();
            let (key, _) = SigningKey::generate(&rng).unwrap();
            let mut cert = [0u8; 32];
            cert[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let device = NewDevice {
                id,
                signing_key: key.public_key(),
                cert_sha256: cert,
                inventory: Inventory {
                    hostname: format!("node-{i:03}"),
                    os: String::new(),
                    kernel: String::new(),
                    addresses: vec![],
                    logged_on_users: vec![],
                    agent_version: String::new(),
                },
            };
            store.enroll(&secret, &device, now).unwrap().unwrap();
            id.to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_on_more_devices_than_a_page_pages_them_in_a_real_browser() {
    // Fails (never skips) with the reason when Chromium is missing.
    chromium_path().unwrap();
    // A hash on 205 devices is prevalent by default and would link nothing.
    let collector = Collector::start_with(|c| {
        *c = c.replace("prevalence_threshold = 10\n", "prevalence_threshold = 1000\n");
    })
    .unwrap();
    let ann = collector.user("ann", "analyst").unwrap();
    let devices = register(&collector, DEVICES);
    let t0 = now_ms() - 3_600_000;
    let alerts: Vec<SourcedAlert> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut a = feed(
                AlertSource::Collector,
                t0 + i as u64 * 1_000,
                rule("worm", "Worm binary written", Severity::High, "T1105", &["TA0011"]),
                vec![Entity::File {
                    path: "/tmp/.w".into(),
                    sha256: Some([7; 32]),
                }],
            );
            a.device_id = Some(d.clone());
            a
        })
        .collect();
    import(&collector, &alerts);
    let (incident, _) = collector.incident_of(&alerts[0].id).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, d) = collector.get(&format!("/api/v1/incidents/{incident}")).await.unwrap();
        if d["devices_total"] == DEVICES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all devices in the incident: {}",
            d["devices_total"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let base = format!("http://{}", collector.http);
    let mut b = Browser::launch().unwrap();
    sign_in(&mut b, &base, &ann, "ann · analyst");
    b.eval(&format!("location.hash = '#/incident/{incident}?tab=assets'; true"))
        .unwrap();
    b.wait_for(
        "the first 200 devices",
        &format!(
            "document.body.dataset.evidenceLoaded === '{incident}'
             && document.querySelector('#devices-showing')?.innerText === 'Devices 1–200 of 205, first seen first'
             && document.querySelectorAll('#incident-devices tbody tr').length === 200"
        ),
        Duration::from_secs(20),
    )
    .unwrap();
    let first = b
        .eval("document.querySelector('#incident-devices tbody tr td').innerText")
        .unwrap();
    assert_eq!(first, "node-000", "first seen first");
    b.eval("document.querySelector('#device-pager button.dev-next').click(); true")
        .unwrap();
    b.wait_for(
        "the last 5 devices",
        "document.querySelector('#devices-showing')?.innerText === 'Devices 201–205 of 205, first seen first'
         && document.querySelectorAll('#incident-devices tbody tr').length === 5
         && document.querySelector('#device-pager button.dev-next').disabled",
        Duration::from_secs(20),
    )
    .unwrap();
    let names = b
        .eval("[...document.querySelectorAll('#incident-devices tbody tr td:first-child')].map((t) => t.innerText).join(',')")
        .unwrap();
    assert_eq!(names, "node-200,node-201,node-202,node-203,node-204");
    // Back to the first page.
    b.eval("document.querySelector('#device-pager button.dev-page:not(.dev-next)').click(); true")
        .unwrap();
    b.wait_for(
        "the first page again",
        "document.querySelector('#devices-showing')?.innerText === 'Devices 1–200 of 205, first seen first'",
        Duration::from_secs(20),
    )
    .unwrap();
}

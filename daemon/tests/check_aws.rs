//! `meshcrypt check aws` against moto's EC2 and the test API server: three instances as Nodes
//! (two in a group that lets UDP 51820 in from itself, one in a group with no inbound rule) and a
//! Pod on a branch ENI. The check names the group pairs that block the mesh, both ways, lists the
//! Pod with its ENI's group, and exits 2; once the rules are added it exits 0.

use std::process::{Command, Output};

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::{IpPermission, UserIdGroupPair};
use meshcrypt_registry::testing::{CREDENTIALS, MotoServer, REGION};
use meshcrypt_test_apiserver::{ApiServerConfig, TestApiServer};
use serde_json::{Value, json};

/// An AMI moto knows.
const AMI: &str = "ami-12c6146b";

fn ec2(moto: &MotoServer) -> aws_sdk_ec2::Client {
    let config = aws_sdk_ec2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(&moto.url)
        .credentials_provider(Credentials::new(CREDENTIALS.0, CREDENTIALS.1, None, None, "test"))
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

/// Lets members of group `from` into group `to` on UDP 51820.
async fn allow_udp(ec2: &aws_sdk_ec2::Client, to: &str, from: &str) {
    let rule = IpPermission::builder()
        .ip_protocol("udp")
        .from_port(51820)
        .to_port(51820)
        .user_id_group_pairs(UserIdGroupPair::builder().group_id(from).build())
        .build();
    ec2.authorize_security_group_ingress().group_id(to).ip_permissions(rule).send().await.unwrap();
}

fn check(kubeconfig: &std::path::Path, moto: &MotoServer, output: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshcrypt"))
        .args(["check", "aws", "-o", output, "--region", REGION, "--endpoint-url", &moto.url])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("AWS_ACCESS_KEY_ID", CREDENTIALS.0)
        .env("AWS_SECRET_ACCESS_KEY", CREDENTIALS.1)
        .output()
        .expect("run meshcrypt check aws")
}

// The API server runs on this runtime while the check runs as a blocking child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_without_the_rule_is_named_and_branch_eni_pods_are_listed() {
    let moto = MotoServer::start();
    let ec2 = ec2(&moto);
    let vpc = ec2.create_vpc().cidr_block("10.0.0.0/16").send().await.unwrap();
    let vpc = vpc.vpc().and_then(|v| v.vpc_id()).unwrap().to_owned();
    let subnet = ec2.create_subnet().vpc_id(&vpc).cidr_block("10.0.1.0/24").send().await.unwrap();
    let subnet = subnet.subnet().and_then(|s| s.subnet_id()).unwrap().to_owned();
    let group = |name: &'static str| {
        let (ec2, vpc) = (ec2.clone(), vpc.clone());
        async move {
            let out = ec2
                .create_security_group()
                .group_name(name)
                .description(name)
                .vpc_id(vpc)
                .send()
                .await
                .unwrap();
            out.group_id().unwrap().to_owned()
        }
    };
    let (mesh, plain, pods_group) = (group("mesh").await, group("plain").await, group("pods").await);
    allow_udp(&ec2, &mesh, &mesh).await;

    let server = TestApiServer::start(ApiServerConfig::default()).await.expect("API server");
    for (i, sg) in [&mesh, &mesh, &plain].into_iter().enumerate() {
        let run = ec2
            .run_instances()
            .image_id(AMI)
            .min_count(1)
            .max_count(1)
            .subnet_id(&subnet)
            .security_group_ids(sg)
            .send()
            .await
            .unwrap();
        let instance = &run.instances()[0];
        let (id, ip) = (instance.instance_id().unwrap(), instance.private_ip_address().unwrap());
        let name = format!("node-{i}");
        server.create(TestApiServer::node_object(&name, &format!("10.244.{i}.0/24"), ip)).unwrap();
        let patch = json!({"spec": {"providerID": format!("aws:///{REGION}a/{id}")}});
        server.merge_patch("v1", "Node", None, &name, &patch, false).unwrap();
    }
    // A Node that is no EC2 instance and runs an agent cannot be checked: named, never skipped.
    server.create(TestApiServer::node_object("on-prem-1", "10.244.98.0/24", "10.0.1.98")).unwrap();
    // A Fargate node runs no agent: left out, named, and no finding.
    let mut fargate = TestApiServer::node_object("fargate-ip-10-0-1-99", "10.244.99.0/24", "10.0.1.99");
    fargate["metadata"]["labels"] = json!({"eks.amazonaws.com/compute-type": "fargate"});
    server.create(fargate).unwrap();
    let eni = ec2.create_network_interface().subnet_id(&subnet).groups(&pods_group).send().await.unwrap();
    let eni = eni.network_interface().unwrap();
    let (eni_id, eni_ip) = (eni.network_interface_id().unwrap(), eni.private_ip_address().unwrap());
    let pod_eni =
        json!([{"eniId": eni_id, "ifAddress": "02:00:00:00:00:01", "privateIp": eni_ip, "vlanId": 1}]);
    server
        .create(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "payments", "namespace": "shop", "annotations": {"vpc.amazonaws.com/pod-eni": pod_eni.to_string()}},
            "spec": {"nodeName": "node-0", "containers": [{"name": "app", "image": "app"}]},
            "status": {"phase": "Running", "podIP": eni_ip, "podIPs": [{"ip": eni_ip}]},
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig, server.admin_token()).unwrap();

    let out = check(&kubeconfig, &moto, "text");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("$ meshcrypt check aws\n{text}");
    assert_eq!(out.status.code(), Some(2), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for want in [
        format!(
            "BLOCKED [{plain} (plain)] → [{mesh} (mesh)]: 2 pair(s); inbound rules of [{mesh} (mesh)] allow no UDP 51820 from it"
        ),
        format!(
            "BLOCKED [{mesh} (mesh)] → [{plain} (plain)]: 2 pair(s); inbound rules of [{plain} (plain)] allow no UDP 51820 from it"
        ),
        "NOT CHECKED on-prem-1: no aws:///<zone>/<instance> providerID".to_owned(),
        "NO AGENT fargate-ip-10-0-1-99: an EKS Fargate node".to_owned(),
        format!("  shop/payments {eni_ip} {eni_id} [{pods_group} (pods)]"),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    assert!(text.contains("node-2 ("), "a blocked pair is named by its nodes:\n{text}");
    assert!(
        !text.contains(&format!("[{mesh} (mesh)] → [{mesh} (mesh)]")),
        "the mesh group lets itself in:\n{text}"
    );

    // The rules each way and the unknown node gone: every pair allowed, the Fargate node left out.
    allow_udp(&ec2, &mesh, &plain).await;
    allow_udp(&ec2, &plain, &mesh).await;
    server.delete("v1", "Node", None, "on-prem-1").unwrap();
    let out = check(&kubeconfig, &moto, "json");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["schema"], "meshcrypt.dev/check-aws/v1");
    assert_eq!(
        (doc["clean"].as_bool(), doc["nodes"].as_u64(), doc["pairs"].as_u64()),
        (Some(true), Some(3), Some(6))
    );
    assert_eq!(doc["blocked"], json!([]));
    assert_eq!(doc["branchEniPods"][0]["groups"], json!([pods_group]));

    // The port is the ConfigMap's, read by the agents' own parser: another port is blocked
    // everywhere; a value the agents reject stops the check (they keep a port it cannot know).
    server
        .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "meshcrypt-system"}}))
        .unwrap();
    server
        .create(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "meshcrypt", "namespace": "meshcrypt-system"},
            "data": {"port": "51821"},
        }))
        .unwrap();
    let out = check(&kubeconfig, &moto, "text");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.starts_with("BLOCKED: UDP 51821 between 3 node(s)"), "{text}");
    let patch = json!({"data": {"port": "abc"}});
    server.merge_patch("v1", "ConfigMap", Some("meshcrypt-system"), "meshcrypt", &patch, false).unwrap();
    let out = check(&kubeconfig, &moto, "text");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rejected") && stderr.contains("port"), "{stderr}");
}

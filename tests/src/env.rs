//! One test's slice of the shared infrastructure.

use command_api::auth::JwtKeys;
use posctl::nats_config::Vars;
use posctl::seed::{self, MerchantSpec};
use sqlx::PgPool;
use uuid::Uuid;

pub const JWT_KEYS: &str = "test-1:smartpos-test-signing-key-0123456789abcdef";

fn var(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

pub struct TestEnv {
    pub database_url: String,
    pub database_name: String,
    pub pg: PgPool,
    /// The shared NATS server's URL (tests with their own server override it per app).
    pub nats_url: String,
    pub redis_url: String,
    pub subject_prefix: String,
    pub stream_prefix: String,
    pub keys: JwtKeys,
}

/// A merchant with one store and its devices' credentials.
#[derive(Debug, Clone)]
pub struct Merchant {
    pub merchant_id: Uuid,
    pub store_id: Uuid,
    pub devices: Vec<(Uuid, String)>,
}

/// A test's stream prefix: `T` and eight upper-case hex digits of its tag.
fn stream_prefix(tag: &str) -> String {
    format!("T{}", tag[16..24].to_uppercase())
}

/// Whether `stream` is named with a test's prefix ([`stream_prefix`]), then
/// `_` and the stream's own name: what `sweep-test-streams` may delete.
pub fn is_test_stream(stream: &str) -> bool {
    let Some((prefix, rest)) = stream.split_once('_') else { return false };
    !rest.is_empty()
        && prefix.len() == 9
        && prefix.starts_with('T')
        && prefix[1..].chars().all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c))
}

impl TestEnv {
    /// A fresh database (migrated) and stream namespace on the shared servers.
    pub async fn new() -> Self {
        let env = Self::without_streams().await;
        env.apply_streams(&env.nats_url).await;
        env
    }

    /// A fresh database, but no streams yet (for tests that run their own NATS).
    pub async fn without_streams() -> Self {
        // In-process services log to stderr when asked (as the spawned binaries do).
        if std::env::var_os("SMARTPOS_TEST_LOGS").is_some() {
            platform::telemetry::init_stderr("tests");
        }
        let base = var("DATABASE_URL", platform::settings::DEFAULT_DATABASE_URL);
        let tag = Uuid::new_v4().simple().to_string();
        let database_name = format!("smartpos_t_{}", &tag[..16]);
        let (root, _) = base.rsplit_once('/').expect("DATABASE_URL has a database path");
        let database_url = format!("{root}/{database_name}");
        posctl::setup::create_database(&database_url).await.expect("create test database");
        let pg = PgPool::connect(&database_url).await.expect("connect to test database");
        posctl::setup::migrate(&pg).await.expect("migrate test database");
        Self {
            database_url,
            database_name,
            pg,
            nats_url: var("NATS_URL", "nats://127.0.0.1:4222"),
            redis_url: var("REDIS_URL", "redis://127.0.0.1:6379"),
            subject_prefix: format!("t{}", &tag[16..24]),
            stream_prefix: stream_prefix(&tag),
            keys: JwtKeys::parse(JWT_KEYS, None).expect("test keys"),
        }
    }

    /// Applies `nats-config/` with this test's prefixes to the server at `url`.
    pub async fn apply_streams(&self, url: &str) {
        let nats = async_nats::connect(url).await.expect("connect to NATS");
        let js = async_nats::jetstream::new(nats);
        let vars = Vars {
            subject_prefix: self.subject_prefix.clone(),
            stream_prefix: self.stream_prefix.clone(),
            replicas: 1,
        };
        posctl::nats_config::apply(&js, &posctl::nats_config::default_dir(), &vars)
            .await
            .expect("apply nats-config");
    }

    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.stream_prefix)
    }

    pub fn infra(&self, nats_url: &str) -> platform::InfraSettings {
        platform::InfraSettings {
            database_url: self.database_url.clone(),
            nats_url: nats_url.to_owned(),
            redis_url: self.redis_url.clone(),
            subject_prefix: self.subject_prefix.clone(),
            stream_prefix: self.stream_prefix.clone(),
            db_max_connections: 8,
        }
    }

    /// A merchant like the demo one (Tokyo, JPY, 10%/8%, rounding down) with `devices` terminals.
    pub async fn merchant(&self, devices: usize) -> Merchant {
        self.merchant_with(MerchantSpec::tokyo(Uuid::now_v7(), Uuid::now_v7()), devices).await
    }

    pub async fn merchant_with(&self, spec: MerchantSpec, devices: usize) -> Merchant {
        seed::upsert_merchant(&self.pg, &spec).await.expect("merchant");
        let mut creds = Vec::new();
        for _ in 0..devices {
            let id = Uuid::now_v7();
            let secret = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
            seed::upsert_device(&self.pg, &spec, id, &secret).await.expect("device");
            creds.push((id, secret));
        }
        Merchant { merchant_id: spec.merchant_id, store_id: spec.store_id, devices: creds }
    }

    /// Keeps a copy of every outbox row as it is committed (`outbox_record`,
    /// filled by a trigger in the committing transaction): the relay deletes
    /// rows once they are on the stream, and a test comparing the stream with
    /// what was committed needs the committed side. Call before any traffic.
    pub async fn record_outbox(&self) {
        for sql in [
            "CREATE TABLE outbox_record (LIKE outbox)",
            "CREATE FUNCTION outbox_record() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO outbox_record SELECT NEW.*; RETURN NULL; END $$",
            "CREATE TRIGGER outbox_record AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION outbox_record()",
        ] {
            sqlx::query(sql).execute(&self.pg).await.expect("recording the outbox");
        }
    }

    /// Drops the database and this test's streams.
    pub async fn cleanup(self) {
        self.pg.close().await;
        if let Ok(nats) = async_nats::connect(&self.nats_url).await {
            let js = async_nats::jetstream::new(nats);
            let vars = Vars {
                subject_prefix: self.subject_prefix.clone(),
                stream_prefix: self.stream_prefix.clone(),
                replicas: 1,
            };
            if let Ok(streams) = posctl::nats_config::load_streams(&posctl::nats_config::default_dir(), &vars)
            {
                for s in streams {
                    let _ = js.delete_stream(&s.name).await;
                }
            }
        }
        let base = var("DATABASE_URL", platform::settings::DEFAULT_DATABASE_URL);
        let (root, _) = base.rsplit_once('/').expect("DATABASE_URL has a database path");
        if let Ok(admin) = PgPool::connect(&format!("{root}/postgres")).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database_name))
                .execute(&admin)
                .await;
            admin.close().await;
        }
    }
}

impl TestEnv {
    /// The environment every real process of this test needs (add the process's own address).
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("NATS_URL", self.nats_url.clone()),
            ("REDIS_URL", self.redis_url.clone()),
            ("NATS_SUBJECT_PREFIX", self.subject_prefix.clone()),
            ("NATS_STREAM_PREFIX", self.stream_prefix.clone()),
            ("JWT_KEYS", JWT_KEYS.to_owned()),
        ]
    }

    /// Runs the real `posctl` against this test's slice of the infrastructure.
    pub async fn posctl(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(crate::process::binary("posctl"))
            .args(args)
            .envs(self.vars())
            .output()
            .await
            .expect("posctl runs")
    }
}

#[cfg(test)]
mod tests {
    use super::{Uuid, is_test_stream, stream_prefix};

    #[test]
    fn only_streams_with_a_test_prefix_are_swept() {
        let made = stream_prefix(&Uuid::new_v4().simple().to_string());
        assert!(is_test_stream(&format!("{made}_EVENTS")), "{made}");
        assert!(is_test_stream("TBF184C62_WORK_RECEIPTS"));
        for kept in
            ["SMARTPOS_EVENTS", "BENCH_EVENTS", "AB_DLQ", "TBF184C6_EVENTS", "Tbf184c62_EVENTS", "T81582110"]
        {
            assert!(!is_test_stream(kept), "{kept}");
        }
    }
}

//! The benchmark's merchants, stores and terminals, written straight into the
//! write model (as `posctl seed-demo` does) with fixed ids, so a second run
//! reuses them. Device secrets are derived from the active signing key.

use anyhow::Context;
use command_api::auth::{JwtKeys, Role};
use posctl::seed::{self, MerchantSpec};
use sqlx::PgPool;
use uuid::Uuid;

pub struct Device {
    pub id: Uuid,
    pub secret: String,
    /// Index into [`Fleet::merchants`].
    pub merchant: usize,
}

pub struct Merchant {
    pub portal_token: String,
}

pub struct Fleet {
    pub merchants: Vec<Merchant>,
    pub devices: Vec<Device>,
}

/// Fixed ids: `be0c0000-0000-7000-8000-<kind><merchant><device>`.
fn id(kind: u128, merchant: usize, device: usize) -> Uuid {
    Uuid::from_u128(
        0xbe0c_0000_0000_7000_8000_0000_0000_0000
            | (kind << 40)
            | ((merchant as u128) << 20)
            | device as u128,
    )
}

impl Fleet {
    /// The merchants, stores and terminals of a fleet of this size, by id (for bulk history).
    pub fn owners(merchants: usize, devices_per_store: usize) -> crate::history::Owners {
        crate::history::Owners {
            merchants: (0..merchants).map(|m| id(1, m, 0)).collect(),
            stores: (0..merchants).map(|m| id(2, m, 0)).collect(),
            devices: (0..merchants).flat_map(|m| (0..devices_per_store).map(move |d| id(3, m, d))).collect(),
            per_store: devices_per_store,
        }
    }

    /// Upserts `merchants` Tokyo merchants (one store each) with `devices_per_store` terminals.
    pub async fn prepare(
        pg: &PgPool,
        keys: &JwtKeys,
        merchants: usize,
        devices_per_store: usize,
    ) -> anyhow::Result<Self> {
        let mut fleet = Fleet { merchants: Vec::new(), devices: Vec::new() };
        for m in 0..merchants {
            let spec = MerchantSpec::tokyo(id(1, m, 0), id(2, m, 0));
            seed::upsert_merchant(pg, &spec).await.context("seeding a benchmark merchant")?;
            for d in 0..devices_per_store {
                let device_id = id(3, m, d);
                let secret = seed::derived_secret(keys, device_id)?;
                seed::upsert_device(pg, &spec, device_id, &secret).await?;
                fleet.devices.push(Device { id: device_id, secret, merchant: m });
            }
            fleet.merchants.push(Merchant {
                portal_token: seed::staff_token(keys, Role::Portal, "loadgen", Some(spec.merchant_id))?,
            });
        }
        Ok(fleet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_per_kind_merchant_and_device() {
        let ids = [id(1, 0, 0), id(2, 0, 0), id(3, 0, 0), id(3, 0, 1), id(3, 1, 0), id(1, 1, 0)];
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert_eq!(id(3, 2, 5).get_version_num(), 7);
    }
}

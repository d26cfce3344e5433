//! The cluster schema, versioned. Each migration is applied once, in order,
//! each in its own transaction, under an advisory lock, by whichever node
//! starts first; the others wait on the lock and find nothing left to do.
//! `muster_schema` lists what was applied and by which release. A database
//! whose schema is newer than this build knows is refused: an older node
//! must not write tables whose rules it does not know.

use postgres::Client;

/// Every migration, oldest first: version `i + 1` is `MIGRATIONS[i]`.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("schema2.sql"),
    include_str!("schema3.sql"),
    include_str!("schema4.sql"),
    include_str!("schema5.sql"),
    include_str!("schema6.sql"),
    include_str!("schema7.sql"),
    include_str!("schema8.sql"),
    include_str!("schema9.sql"),
    include_str!("schema10.sql"),
];

/// The schema version this build reads and writes.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory lock migrations run under (`muster` in ASCII).
const LOCK: i64 = 0x6d75_7374_6572;

#[derive(Debug)]
pub enum SchemaError {
    /// The database was migrated by a newer release.
    Newer {
        found: i32,
    },
    /// The server refused a migration's own SQL (an object it creates is
    /// there already, a statement it cannot run): not an outage to wait
    /// out, but a database to look at.
    Migration {
        version: i32,
        error: postgres::Error,
    },
    Db(postgres::Error),
}

impl From<postgres::Error> for SchemaError {
    fn from(e: postgres::Error) -> SchemaError {
        SchemaError::Db(e)
    }
}

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchemaError::Newer { found } => write!(
                f,
                "the database's muster schema is version {found}, newer than this musterd's {VERSION}: upgrade musterd on this node"
            ),
            SchemaError::Migration { version, error } => write!(
                f,
                "the database refused schema migration {version}: {}",
                super::db::describe(error)
            ),
            SchemaError::Db(e) => f.write_str(&super::db::describe(e)),
        }
    }
}

/// The version the database is at: 0 when muster never ran there.
pub fn version(client: &mut Client) -> Result<i32, postgres::Error> {
    let row = client.query_one(
        "SELECT to_regclass('muster_schema') IS NOT NULL AS present",
        &[],
    )?;
    if !row.get::<_, bool>(0) {
        return Ok(0);
    }
    let row = client.query_one("SELECT coalesce(max(version), 0) FROM muster_schema", &[])?;
    Ok(row.get(0))
}

/// Bring the schema to [`VERSION`]; the versions it was at and is at now.
pub fn migrate(client: &mut Client) -> Result<(i32, i32), SchemaError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&LOCK])?;
    let applied = apply(client);
    // A connection that broke took its lock with it.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&LOCK]);
    applied
}

fn apply(client: &mut Client) -> Result<(i32, i32), SchemaError> {
    client.batch_execute(
        "CREATE TABLE IF NOT EXISTS muster_schema (
             version    integer PRIMARY KEY,
             release    text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )?;
    let found = version(client)?;
    if found > VERSION {
        return Err(SchemaError::Newer { found });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let v = i as i32 + 1;
        let mut tx = client.transaction()?;
        if let Err(error) = tx.batch_execute(sql) {
            // Class 42: syntax, or an object that exists or is missing.
            if error.code().is_some_and(|c| c.code().starts_with("42")) {
                return Err(SchemaError::Migration { version: v, error });
            }
            return Err(SchemaError::Db(error));
        }
        tx.execute(
            "INSERT INTO muster_schema (version, release) VALUES ($1, $2)",
            &[&v, &crate::VERSION],
        )?;
        tx.commit()?;
        log::info!("cluster: schema migrated to version {v}");
    }
    Ok((found, VERSION))
}

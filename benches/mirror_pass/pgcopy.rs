//! The reference the store is measured against: `COPY … FROM STDIN (FORMAT binary)` of the same
//! contracts into the same table, filling the columns the upsert fills. The encoder is written
//! out here (PostgreSQL's binary tuple format) so each column goes in as the table's own type.

use chrono::NaiveDate;
use partner_sync::partners::rabot::Contract;
use partner_sync::store::content_hash;
use sqlx::PgConnection;

/// The columns the upsert writes, in the order [`encode_row`] writes them.
const COPY_CONTRACTS: &str = "COPY mirror.rabot_contracts
    (customer_number, contract_number, name, state, tariff_name, delivery_start, delivery_end,
     meter_number, malo_id, melo_id, expected_annual_kwh, accounting_method, grid_operator_code,
     grid_operator_name, payload, content_hash)
    FROM STDIN (FORMAT binary)";
const FIELDS: i16 = 16;
/// Bytes buffered before a chunk goes to the server.
const CHUNK: usize = 1 << 20;

/// Copies `contracts` in one COPY, encoding (hashes included) as it goes; returns the rows.
pub async fn copy_contracts(
    conn: &mut PgConnection,
    contracts: &[Contract],
) -> anyhow::Result<u64> {
    let mut copy = conn.copy_in_raw(COPY_CONTRACTS).await?;
    let mut buf = header();
    for contract in contracts {
        encode_row(&mut buf, contract)?;
        if buf.len() >= CHUNK {
            copy.send(std::mem::take(&mut buf)).await?;
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    copy.send(buf).await?;
    Ok(copy.finish().await?)
}

/// Signature, flags (no OIDs), header extension length.
fn header() -> Vec<u8> {
    let mut buf = Vec::with_capacity(CHUNK + 4096);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf
}

fn encode_row(buf: &mut Vec<u8>, c: &Contract) -> anyhow::Result<()> {
    let text = |v: &Option<String>| v.as_deref().map(|s| s.as_bytes().to_vec());
    let kwh = match &c.expected_annual_kwh {
        Some(decimal) => Some(
            numeric(decimal)
                .ok_or_else(|| anyhow::anyhow!("{decimal:?} is not a plain decimal"))?,
        ),
        None => None,
    };
    let mut payload = vec![1u8]; // jsonb binary format version
    serde_json::to_writer(&mut payload, &c.raw)?;
    let fields = [
        Some(c.customer_number.as_bytes().to_vec()),
        Some(c.contract_number.as_bytes().to_vec()),
        text(&c.name),
        text(&c.state),
        text(&c.tariff_name),
        c.delivery_start.map(date),
        c.delivery_end.map(date),
        text(&c.meter_number),
        text(&c.malo_id),
        text(&c.melo_id),
        kwh,
        text(&c.accounting_method),
        text(&c.grid_operator_code),
        text(&c.grid_operator_name),
        Some(payload),
        Some(content_hash(&c.raw)),
    ];
    buf.extend_from_slice(&FIELDS.to_be_bytes());
    for field in fields {
        match field {
            Some(bytes) => {
                buf.extend_from_slice(&i32::try_from(bytes.len())?.to_be_bytes());
                buf.extend_from_slice(&bytes);
            }
            None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    Ok(())
}

/// Days since 2000-01-01, PostgreSQL's date epoch.
fn date(day: NaiveDate) -> Vec<u8> {
    let epoch = NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date");
    ((day - epoch).num_days() as i32).to_be_bytes().to_vec()
}

/// `numeric`'s binary form of a plain decimal (`-12.50`): base-10000 digits, the weight of
/// the first, the sign and the display scale. `None` for anything else (exponents, NaN).
fn numeric(text: &str) -> Option<Vec<u8>> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits_only = int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits_only {
        return None;
    }
    let int = int.trim_start_matches('0');
    let int_pad = (4 - int.len() % 4) % 4;
    let frac_pad = (4 - frac.len() % 4) % 4;
    let all = format!("{}{int}{frac}{}", "0".repeat(int_pad), "0".repeat(frac_pad));
    let mut groups: Vec<i16> = all
        .as_bytes()
        .chunks(4)
        .map(|g| g.iter().fold(0i16, |n, d| n * 10 + i16::from(d - b'0')))
        .collect();
    let mut weight = ((int.len() + int_pad) / 4) as i16 - 1;
    let leading = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading);
    weight -= leading as i16;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign: u16 = if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    };
    let mut out = Vec::with_capacity(8 + 2 * groups.len());
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(frac.len() as i16).to_be_bytes());
    for group in groups {
        out.extend_from_slice(&group.to_be_bytes());
    }
    Some(out)
}

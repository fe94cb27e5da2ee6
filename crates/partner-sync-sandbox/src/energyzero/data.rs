//! EnergyZero's generated users and contracts, from `Prng` streams keyed by the seed and the
//! user's (and contract's) position, so the same options give byte-identical answers.

use serde_json::{Value, json};

use super::customer_api::CONTRACT_PHASES;
use super::{HEAVY_EVERY, ORDINARY_CONTRACTS, User};
use crate::prng::{Prng, add_months, date, last_day_of, timestamp};

/// Keeps EnergyZero's PRNG streams apart from RABOT's, which use the low 52 bits.
const STREAM_TAG: u64 = 0xE2 << 56;

/// The stream of one user (`slot` 0) or of its contract number `slot`.
fn stream(user_index: usize, slot: usize) -> u64 {
    STREAM_TAG | ((user_index as u64) << 24) | slot as u64
}

/// A UUID-shaped id (version 4 bits set) drawn from the stream.
fn uuid_from(rng: &mut Prng) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
    bytes[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

const FIRST_NAMES: [(&str, &str); 16] = [
    ("Daan", "daan"),
    ("Anouk", "anouk"),
    ("Zoë", "zoe"),
    ("Joëlle", "joelle"),
    ("Thijs", "thijs"),
    ("Sanne", "sanne"),
    ("Ruud", "ruud"),
    ("Fenna", "fenna"),
    ("Émile", "emile"),
    ("Ólafur", "olafur"),
    ("Iñaki", "inaki"),
    ("Şeyma", "seyma"),
    ("Mees", "mees"),
    ("Noor", "noor"),
    ("Björn", "bjorn"),
    ("Lotte", "lotte"),
];

/// Dutch surnames keep their prefix (tussenvoegsel) apart: it is the middleName.
const SURNAMES: [(&str, &str); 14] = [
    ("Jansen", "jansen"),
    ("Vries", "vries"),
    ("Berg", "berg"),
    ("Bakker", "bakker"),
    ("Visser", "visser"),
    ("Smit", "smit"),
    ("IJzerman", "ijzerman"),
    ("Dijkstra", "dijkstra"),
    ("Çelik", "celik"),
    ("Öztürk", "ozturk"),
    ("Nguyễn", "nguyen"),
    ("Đorđević", "djordjevic"),
    ("Mulder", "mulder"),
    ("Hoekstra", "hoekstra"),
];

const MIDDLE_NAMES: [&str; 5] = ["van", "de", "van der", "van den", "ter"];

const MAIL_DOMAINS: [&str; 3] = ["example.com", "example.org", "example.net"];

const VENDORS: [&str; 4] = ["energyzero", "energyzero", "energyzero", "sandbox-label"];

const COMPANIES: [&str; 4] = [
    "Bakkerij van 't Hof B.V.",
    "Café De Gouden Leeuw",
    "Zonnepark Ëlst B.V.",
    "Ĳssalon Dolce V.O.F.",
];

const CITIES: [(&str, &str); 8] = [
    ("Amsterdam", "1015"),
    ("Rotterdam", "3011"),
    ("Utrecht", "3511"),
    ("Groningen", "9711"),
    ("'s-Hertogenbosch", "5211"),
    ("Leeuwarden", "8911"),
    ("Maastricht", "6211"),
    ("Zwolle", "8011"),
];

const STREETS: [&str; 6] = [
    "Keizersgracht",
    "Oudegracht",
    "Laan van Nieuw Oost-Indië",
    "Coolsingel",
    "Stationsplein",
    "Ĳsselkade",
];

pub(super) fn generate_users(seed: u64, count: usize, heavy_contracts: usize) -> Vec<User> {
    (0..count)
        .map(|index| {
            let mut rng = Prng::new(seed, stream(index, 0));
            let id = uuid_from(&mut rng);
            let (first_name, first_ascii) = rng.pick(&FIRST_NAMES);
            let (surname, surname_ascii) = rng.pick(&SURNAMES);
            let middle_name = rng.percent(25).then(|| rng.pick(&MIDDLE_NAMES));
            let phone_number = (!rng.percent(30)).then(|| format!("+316{}", rng.digits(8)));
            let customer_number = rng.between(10_000_000, 99_999_999).to_string();
            let domain = rng.pick(&MAIL_DOMAINS);
            let email = format!("{first_ascii}.{surname_ascii}.{}@{domain}", index + 1);
            let birth_date = date(
                rng.between(1940, 2004),
                rng.between(1, 12),
                rng.between(1, 28),
            );
            let vendor = rng.pick(&VENDORS);
            let record = json!({
                "id": id,
                "customerNumber": customer_number,
                "email": email,
                "firstName": first_name,
                "middleName": middle_name,
                "surname": surname,
                "phoneNumber": phone_number,
                "birthDate": birth_date,
                "vendor": vendor,
            });
            let contract_count = if (index + 1) % HEAVY_EVERY == 0 {
                heavy_contracts
            } else {
                ORDINARY_CONTRACTS
            };
            let contracts = (0..contract_count)
                .map(|slot| generate_contract(seed, index, slot))
                .collect();
            User {
                id,
                record,
                contracts,
            }
        })
        .collect()
}

fn generate_contract(seed: u64, user_index: usize, slot: usize) -> Value {
    let mut rng = Prng::new(seed, stream(user_index, slot + 1));
    let id = uuid_from(&mut rng);
    let phase = match rng.below(100) {
        0..=49 => "DELIVERY_STARTED",
        50..=59 => "DELIVERY_STOPPED",
        60..=64 => "DELIVERY_FAILED",
        65..=69 => "NEVER_DELIVERED",
        _ => rng.pick(&CONTRACT_PHASES[..10]),
    };
    let company = rng.percent(15).then(|| rng.pick(&COMPANIES));
    let consumer_type = if company.is_some() {
        "BUSINESS"
    } else {
        "CONSUMER"
    };
    let contract_type = rng.pick(&["FIXED", "FIXED", "VARIABLE", "DYNAMIC"]);

    let start = (2021 + rng.below(5), 1 + rng.below(12));
    let start_date = date(start.0, start.1, 1);
    // A contract moved to another start keeps the first agreed date here.
    let original_start_date = if rng.percent(20) {
        date(start.0, start.1, rng.between(2, 28))
    } else {
        start_date.clone()
    };
    let duration = (contract_type == "FIXED").then(|| rng.pick(&[12, 24, 36]));
    let end_date = duration.map(|months| last_day_of(add_months(start, months - 1)));
    let delivery_stopped_date =
        (phase == "DELIVERY_STOPPED").then(|| last_day_of(add_months(start, rng.between(2, 30))));

    let has_electricity = !rng.percent(5);
    // Every contract delivers something: gas-only when electricity is missing.
    let has_gas = !has_electricity || rng.percent(60);
    let delivery_address = address(&mut rng);
    let billing_address = if rng.percent(80) {
        delivery_address.clone()
    } else {
        address(&mut rng)
    };
    let usage = f64::from(rng.between(900, 9500)) + f64::from(rng.below(10)) / 10.0;
    let accepted_at = timestamp(&mut rng, start.0.saturating_sub(1), start.0);
    let payment_method = if rng.percent(85) {
        "DIRECT_DEBIT"
    } else {
        "MANUAL"
    };
    let has_production = rng.percent(20);

    json!({
        "id": id,
        "acceptedAt": accepted_at,
        "consumerType": consumer_type,
        "company": company,
        "energyContractType": contract_type,
        "phase": phase,
        "startDate": start_date,
        "originalStartDate": original_start_date,
        "endDate": end_date,
        "deliveryStoppedDate": delivery_stopped_date,
        "duration": duration,
        "paymentMethod": payment_method,
        "hasGas": has_gas,
        "hasElectricity": has_electricity,
        "hasProduction": has_production,
        "totalYearlyUsage": usage,
        "deliveryAddress": delivery_address,
        "billingAddress": billing_address,
    })
}

fn address(rng: &mut Prng) -> Value {
    let (city, postcode_digits) = rng.pick(&CITIES);
    let letters: String = (0..2)
        .map(|_| char::from(rng.pick(b"ABCDEGHJKLMNPRSTVWXZ")))
        .collect();
    let addition = rng
        .percent(15)
        .then(|| rng.pick(&["A", "bis", "2-hoog", "III"]));
    json!({
        "street": rng.pick(&STREETS),
        "houseNumber": rng.between(1, 250),
        "houseNumberAddition": addition,
        "zipCode": format!("{postcode_digits} {letters}"),
        "city": city,
        "country": "NL",
    })
}

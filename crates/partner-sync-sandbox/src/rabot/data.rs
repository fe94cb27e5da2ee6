//! RABOT's generated customers and contracts. Everything here draws from `Prng` streams keyed by
//! the seed and the customer's (and contract's) position, so the same options give
//! byte-identical JSON, and adding customers leaves the earlier ones unchanged.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use super::{Customer, MAX_CUSTOMERS, linking};
use crate::SandboxOptions;
use crate::prng::{Prng, add_months, date, last_day_of, timestamp};

/// The stream of one customer (`slot` 0) or of its contract number `slot`.
fn stream(customer_index: usize, slot: usize) -> u64 {
    ((customer_index as u64) << 32) | slot as u64
}

const FIRST_NAMES: [(&str, &str); 18] = [
    ("Zoë", "zoe"),
    ("Jürgen", "juergen"),
    ("Łukasz", "lukasz"),
    ("Ådne", "aadne"),
    ("Ñusta", "nusta"),
    ("Σοφία", "sofia"),
    ("Anna", "anna"),
    ("Lena", "lena"),
    ("Mehmet", "mehmet"),
    ("Søren", "soeren"),
    ("Chloé", "chloe"),
    ("Björn", "bjoern"),
    ("Jan", "jan"),
    ("Marie", "marie"),
    ("Ömer", "oemer"),
    ("José", "jose"),
    ("Hannah", "hannah"),
    ("Paul", "paul"),
];

const LAST_NAMES: [(&str, &str); 16] = [
    ("Müller", "mueller"),
    ("Schmidt", "schmidt"),
    ("Weiß", "weiss"),
    ("Kowalczyk", "kowalczyk"),
    ("Østergaard", "oestergaard"),
    ("Παπαδοπούλου", "papadopoulou"),
    ("Quispe", "quispe"),
    ("Groß", "gross"),
    ("Yılmaz", "yilmaz"),
    ("Nguyễn", "nguyen"),
    ("O'Brien", "obrien"),
    ("Fischer", "fischer"),
    ("Becker", "becker"),
    ("Hoffmann", "hoffmann"),
    ("Dvořák", "dvorak"),
    ("Wagner", "wagner"),
];

const MAIL_DOMAINS: [&str; 3] = ["example.com", "example.org", "example.net"];

const BUSINESS_NAMES: [&str; 5] = [
    "Müller & Söhne GmbH",
    "Bäckerei Groß e.K.",
    "Café Østerbro UG (haftungsbeschränkt)",
    "Ζαχαροπλαστείο Σοφία",
    "Solar O'Brien GbR",
];

const CITIES: [(&str, &str); 10] = [
    ("Berlin", "10115"),
    ("München", "80331"),
    ("Köln", "50667"),
    ("Düsseldorf", "40213"),
    ("Nürnberg", "90402"),
    ("Leipzig", "04109"),
    ("Hamburg", "20095"),
    ("Stuttgart", "70173"),
    ("Görlitz", "02826"),
    ("Lübeck", "23552"),
];

const STREETS: [&str; 8] = [
    "Hauptstraße",
    "Königsallee",
    "Schloßstraße",
    "Am Mühlbach",
    "Lindenweg",
    "Bahnhofstraße",
    "Gärtnerplatz",
    "Straße des 17. Juni",
];

const TARIFFS: [&str; 5] = [
    "RABOT Dynamic",
    "RABOT Flex",
    "RABOT Fix 12",
    "Ökostrom Dynamisch",
    "Wärmepumpe Dynamic",
];

const CONTRACT_NAMES: [&str; 5] = ["Zuhause", "Wärmepumpe", "Wallbox", "Ferienwohnung", "Büro"];

const OPERATORS: [(&str, &str); 6] = [
    ("9907248000005", "Stromnetz Berlin GmbH"),
    ("9900270000007", "Westnetz GmbH"),
    ("9905729000008", "Netze BW GmbH"),
    ("9900094000002", "Bayernwerk Netz GmbH"),
    ("9901068000001", "SWM Infrastruktur GmbH & Co. KG"),
    ("9907227000001", "Stromnetz Hamburg GmbH"),
];

const SUPPLIERS: [(&str, &str); 5] = [
    ("9900080000007", "E.ON Energie Deutschland GmbH"),
    ("9900073000003", "Vattenfall Europe Sales GmbH"),
    ("9903413000008", "Stadtwerke München GmbH"),
    ("9900318000000", "EnBW Energie Baden-Württemberg AG"),
    ("9907683000001", "LichtBlick SE"),
];

const BANKS: [(&str, &str); 5] = [
    ("COBADEFFXXX", "Commerzbank"),
    ("DEUTDEDBXXX", "Deutsche Bank"),
    ("GENODEM1GLS", "GLS Gemeinschaftsbank eG"),
    ("INGDDEFFXXX", "ING-DiBa"),
    ("BYLADEM1001", "Deutsche Kreditbank AG"),
];

/// The customer data a contract repeats in its addresses and bank details.
#[derive(Clone, Copy)]
struct Holder {
    first_name: &'static str,
    last_name: &'static str,
    business_name: Option<&'static str>,
}

/// The customers the partner sees, then the hidden ones that can link (`linkable_customers`).
pub(super) fn generate_customers(options: &SandboxOptions) -> (Vec<Customer>, Vec<Customer>) {
    let count = options.customers.min(MAX_CUSTOMERS);
    let total = count + options.linkable_customers.min(linking::MAX_LINKABLE);
    let external_base = Prng::new(options.seed, u64::MAX).below(900_000) as usize;
    let mut taken_numbers = HashSet::with_capacity(count);
    let mut previous_external: Option<String> = None;
    let mut customers = Vec::with_capacity(total);

    for index in 0..total {
        // A linkable customer logs in with its e-mail address and has no relation to us yet.
        let linkable = index >= count;
        let mut rng = Prng::new(options.seed, stream(index, 0));
        let number = loop {
            let candidate = rng.between(10_000_000, 99_999_999);
            if taken_numbers.insert(candidate) {
                break candidate.to_string();
            }
        };
        let (first_name, first_ascii) = rng.pick(&FIRST_NAMES);
        let (last_name, last_ascii) = rng.pick(&LAST_NAMES);
        let email = if rng.percent(10) && !linkable {
            None
        } else {
            let domain = rng.pick(&MAIL_DOMAINS);
            Some(format!("{first_ascii}.{last_ascii}.{}@{domain}", index + 1))
        };
        // Some customers share their predecessor's external id, so a filter can match two.
        let external = if linkable {
            None
        } else if index % 10 == 3 && previous_external.is_some() {
            previous_external.clone()
        } else if rng.percent(10) {
            None
        } else {
            Some(format!("EXT-{:06}", (external_base + index) % 1_000_000))
        };
        previous_external.clone_from(&external);
        let business_name = rng.percent(12).then(|| rng.pick(&BUSINESS_NAMES));
        let relations: &[&str] = if linkable {
            &[]
        } else if index % 7 == 6 {
            &["Linked"]
        } else if index % 11 == 5 {
            &["Owner", "Affiliate"]
        } else {
            &["Owner"]
        };
        let created_at = timestamp(&mut rng, 2019, 2024);

        let record = json!({
            "customerNumber": number,
            "emailAddress": email,
            "externalIdentifier": external,
            "firstName": first_name,
            "lastName": last_name,
            "businessName": business_name,
            "relations": relations,
            // Not in the docs: the client must tolerate fields it does not know.
            "createdAt": created_at,
        });

        let heavy = !linkable
            && options.heavy_customer_every > 0
            && (index + 1) % options.heavy_customer_every == 0;
        let contract_count = if heavy {
            options.heavy_contracts
        } else {
            options.contracts_per_customer
        };
        let holder = Holder {
            first_name,
            last_name,
            business_name,
        };
        let contracts = (0..contract_count)
            .map(|slot| generate_contract(options.seed, index, slot, holder))
            .collect();

        customers.push(Customer {
            number,
            record,
            contracts,
            costs: HashMap::new(),
        });
    }
    let hidden = customers.split_off(count);
    (customers, hidden)
}

fn generate_contract(seed: u64, customer_index: usize, slot: usize, holder: Holder) -> Value {
    let mut rng = Prng::new(seed, stream(customer_index, slot + 1));
    let contract_number = format!("C-{:07}-{:02}", customer_index + 1, slot + 1);
    let state = match rng.below(100) {
        0..=59 => "Delivery",
        60..=79 => "PendingDelivery",
        80..=94 => "Cancelled",
        // Seen once in the reference docs but not in the documented set.
        _ => "Open",
    };
    let tariff_name = rng.pick(&TARIFFS);
    let name = (!rng.percent(5)).then(|| rng.pick(&CONTRACT_NAMES));

    let start = (2021 + rng.below(5), 1 + rng.below(12));
    let actual_date_of_delivery = date(start.0, start.1, 1);
    let end_date_of_delivery = match state {
        "Cancelled" => Some(last_day_of(add_months(start, rng.between(3, 30)))),
        "Delivery" if rng.percent(10) => Some(last_day_of(add_months(start, 23))),
        _ => None,
    };

    let delivery_address = address(&mut rng, holder);
    let billing_address = if rng.percent(80) {
        delivery_address.clone()
    } else {
        address(&mut rng, holder)
    };
    let bank_detail = if rng.percent(12) {
        Value::Null
    } else {
        bank_detail(&mut rng, holder)
    };

    let meter_number = if state == "PendingDelivery" && rng.percent(50) {
        None
    } else {
        Some(format!("1EMH00{}", rng.digits(8)))
    };
    let melo_identifier = if rng.percent(10) {
        None
    } else {
        Some(melo_identifier(&mut rng))
    };
    let malo_identifier = malo_identifier(&mut rng);

    let (cancellation_period, cancellation_unit) = if rng.percent(10) {
        (2, "Week")
    } else {
        (rng.pick(&[1, 1, 3]), "Month")
    };
    let (duration_period, duration_unit) = if rng.percent(10) {
        (None, None)
    } else {
        (Some(rng.pick(&[12, 12, 24, 1])), Some("Month"))
    };
    let (renewal_period, renewal_unit) = if rng.percent(10) {
        (None, None)
    } else {
        (Some(rng.pick(&[1, 12])), Some("Month"))
    };

    let kwh = rng.between(900, 9500);
    let expected_consumption = if rng.percent(30) {
        json!(f64::from(kwh) + f64::from(rng.between(1, 99)) / 100.0)
    } else {
        json!(kwh)
    };
    let accounting_method = if rng.percent(92) { "SLP" } else { "RLM" };
    let (operator_code, operator_name) = rng.pick(&OPERATORS);
    let operator_code = (!rng.percent(5)).then_some(operator_code);
    let (supplier_code, supplier_name) = if rng.percent(15) {
        (None, None)
    } else {
        let (code, name) = rng.pick(&SUPPLIERS);
        (Some(code), Some(name))
    };
    let paragraph_14a = if rng.percent(25) {
        Value::Null
    } else {
        json!({
            "isModule1InUse": rng.percent(30),
            "isModule2InUse": rng.percent(10),
            "isModule3InUse": rng.percent(5),
        })
    };
    let created_at = timestamp(&mut rng, start.0.saturating_sub(1), start.0);

    json!({
        "contractNumber": contract_number,
        "tariffName": tariff_name,
        "contractState": state,
        "name": name,
        "deliveryAddress": delivery_address,
        "billingAddress": billing_address,
        "bankDetail": bank_detail,
        "meterNumber": meter_number,
        "meLoIdentifier": melo_identifier,
        "maLoIdentifier": malo_identifier,
        "actualDateOfDelivery": actual_date_of_delivery,
        "endDateOfDelivery": end_date_of_delivery,
        "cancellationPeriod": cancellation_period,
        "cancellationPeriodUnit": cancellation_unit,
        "durationPeriod": duration_period,
        "durationPeriodUnit": duration_unit,
        "renewalPeriod": renewal_period,
        "renewalPeriodUnit": renewal_unit,
        "expectedAnnualConsumptionInKwhPerYear": expected_consumption,
        "accountingMethod": accounting_method,
        "distributionSystemOperatorCode": operator_code,
        "distributionSystemOperatorName": operator_name,
        "previousSupplierCode": supplier_code,
        "previousSupplierName": supplier_name,
        "paragraph14AInfo": paragraph_14a,
        // Not in the docs: the client must tolerate fields it does not know.
        "createdAt": created_at,
    })
}

fn address(rng: &mut Prng, holder: Holder) -> Value {
    let title = rng
        .percent(8)
        .then(|| rng.pick(&["Dr.", "Prof.", "Dr. med."]));
    let gender = if rng.percent(15) {
        None
    } else {
        Some(rng.pick(&["Male", "Female", "Diverse"]))
    };
    let extension = rng
        .percent(15)
        .then(|| rng.pick(&["Hinterhaus", "2. OG links", "c/o Weiß", "Whg. 4"]));
    let street = rng.pick(&STREETS);
    let number = rng.between(1, 180);
    let suffix = if rng.percent(15) {
        rng.pick(&["a", "b", "c"])
    } else {
        ""
    };
    let house_number = format!("{number}{suffix}");
    let (city, post_code) = rng.pick(&CITIES);
    json!({
        "title": title,
        "firstName": holder.first_name,
        "lastName": holder.last_name,
        "businessName": holder.business_name,
        "gender": gender,
        "extension": extension,
        "streetName": street,
        "houseNumber": house_number,
        "city": city,
        "postCode": post_code,
        "countryCode": "DE",
    })
}

fn bank_detail(rng: &mut Prng, holder: Holder) -> Value {
    let (bic, bank_name) = rng.pick(&BANKS);
    let bic = (!rng.percent(15)).then_some(bic);
    let account_holder = match holder.business_name {
        Some(business) => business.to_owned(),
        None => format!("{} {}", holder.first_name, holder.last_name),
    };
    json!({
        "accountHolder": account_holder,
        "iban": german_iban(&rng.digits(18)),
        "bic": bic,
        "bankName": bank_name,
        "hasAcceptedDirectDebit": !rng.percent(10),
    })
}

/// A German IBAN with correct ISO 13616 check digits, so a client that validates IBANs
/// accepts it.
pub(super) fn german_iban(bban: &str) -> String {
    // Country code DE as digits (D=13, E=14) and check digits 00, moved behind the BBAN.
    let rearranged = format!("{bban}131400");
    let remainder = rearranged
        .bytes()
        .fold(0u32, |acc, digit| (acc * 10 + u32::from(digit - b'0')) % 97);
    format!("DE{:02}{bban}", 98 - remainder)
}

/// 33 characters: "DE", a 11-digit network operator number, 20 alphanumerics.
fn melo_identifier(rng: &mut Prng) -> String {
    const ALPHANUMERIC: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let tail: String = (0..20)
        .map(|_| char::from(rng.pick(ALPHANUMERIC)))
        .collect();
    format!("DE{}{tail}", rng.digits(11))
}

/// 11 digits, the last a check digit over the first ten (odd positions once, even twice).
fn malo_identifier(rng: &mut Prng) -> String {
    let body = format!("{}{}", rng.between(1, 9), rng.digits(9));
    let sum: u32 = body
        .bytes()
        .enumerate()
        .map(|(position, digit)| {
            let value = u32::from(digit - b'0');
            if position % 2 == 0 { value } else { 2 * value }
        })
        .sum();
    format!("{body}{}", (10 - sum % 10) % 10)
}

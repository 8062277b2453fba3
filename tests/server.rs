//! Real-process tests of `scoria serve`: every v2 endpoint and every error, over HTTP on
//! 127.0.0.1, against the binary as users run it.

mod common;

use common::{assert_error, copy_dir, model_source, prepend_config, repo_with, Server, DIGIT_ZERO};
use serde_json::{json, Value};

/// A v2 request for the digits model with `rows` copies of [`DIGIT_ZERO`], flat data.
fn digits_flat(rows: usize) -> Value {
    let data: Vec<u8> = (0..rows).flat_map(|_| DIGIT_ZERO).collect();
    json!({"inputs": [{"name": "input", "shape": [rows, 64], "datatype": "FP32", "data": data}]})
}

/// The same request with data nested by row.
fn digits_nested(rows: usize) -> Value {
    let data: Vec<Vec<u8>> = (0..rows).map(|_| DIGIT_ZERO.to_vec()).collect();
    json!({"inputs": [{"name": "input", "shape": [rows, 64], "datatype": "FP32", "data": data}]})
}

/// The output called `name` of a v2 response.
fn output<'a>(resp: &'a Value, name: &str) -> &'a Value {
    resp["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("no outputs array: {resp}"))
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output {name}: {resp}"))
}

fn output_names(resp: &Value) -> Vec<String> {
    resp["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("no outputs array: {resp}"))
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect()
}

/// Asserts a digits response classifies every row as 0 with sane probabilities.
fn assert_all_zero(resp: &Value, rows: usize) {
    let label = output(resp, "label");
    assert_eq!(label["datatype"], "INT64");
    assert_eq!(label["shape"], json!([rows]));
    assert_eq!(label["data"], json!(vec![0; rows]), "{resp}");
    let probs = output(resp, "probabilities");
    assert_eq!(probs["datatype"], "FP32");
    assert_eq!(probs["shape"], json!([rows, 10]));
    let p: Vec<f64> = probs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(p.len(), rows * 10);
    for row in p.chunks(10) {
        let sum: f64 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-3, "probabilities sum to {sum}");
        assert!(row[0] > 0.9, "P(0) = {} for a zero", row[0]);
    }
}

#[test]
fn health_metadata_and_routing() {
    let s = Server::start(repo_with(&["digits", "identity_all", "add_fixed"]), &[]);

    assert_eq!(s.get("/v2/health/live"), (200, json!({"live": true})));
    assert_eq!(s.get("/v2/health/ready"), (200, json!({"ready": true})));

    let (status, meta) = s.get("/v2");
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "scoria");
    assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"));
    assert!(meta["extensions"].is_array(), "{meta}");

    // Model metadata, with and without the version, is the same document.
    let (status, digits) = s.get("/v2/models/digits");
    assert_eq!(status, 200);
    assert_eq!(
        digits,
        json!({
            "name": "digits",
            "versions": ["1"],
            "platform": "onnx_onnxv1",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                {"name": "label", "datatype": "INT64", "shape": [-1]},
            ],
        })
    );
    assert_eq!(s.get("/v2/models/digits/versions/1"), (200, digits));

    let (status, ids) = s.get("/v2/models/identity_all");
    assert_eq!(status, 200);
    let types = [
        "fp32", "fp64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "bool",
    ];
    let spec = |prefix: &str| -> Value {
        types
            .iter()
            .map(|t| {
                let dt = match *t {
                    "fp32" => "FP32".to_string(),
                    "fp64" => "FP64".to_string(),
                    t => t.to_uppercase(),
                };
                json!({"name": format!("{prefix}_{t}"), "datatype": dt, "shape": [-1, 3]})
            })
            .collect()
    };
    assert_eq!(ids["inputs"], spec("x"));
    assert_eq!(ids["outputs"], spec("y"));

    let (status, add) = s.get("/v2/models/add_fixed");
    assert_eq!(status, 200);
    assert_eq!(
        add["inputs"],
        json!([
            {"name": "a", "datatype": "FP32", "shape": [2, 2]},
            {"name": "b", "datatype": "FP32", "shape": [2, 2]},
        ])
    );
    assert_eq!(
        add["outputs"],
        json!([{"name": "sum", "datatype": "FP32", "shape": [2, 2]}])
    );

    // Model readiness.
    for path in [
        "/v2/models/digits/ready",
        "/v2/models/digits/versions/1/ready",
    ] {
        let (status, body) = s.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["ready"], true);
        assert_eq!(body["name"], "digits");
        assert_eq!(body["version"], "1");
    }
    assert_eq!(s.get("/v2/models/add_fixed/ready").0, 200);

    // Unknown models and versions: 404 naming what is missing, on every model route.
    let infer = digits_flat(1).to_string();
    for path in ["/v2/models/nope", "/v2/models/nope/ready"] {
        assert_error(s.get(path), 404, "unknown model 'nope'");
    }
    assert_error(
        s.post("/v2/models/nope/infer", &infer),
        404,
        "unknown model 'nope'",
    );
    assert_error(
        s.post("/v2/models/nope/versions/1/infer", &infer),
        404,
        "unknown model 'nope'",
    );
    for v in ["2", "abc", "0", "-1"] {
        let needle = format!("model 'digits' has no version '{v}'");
        let base = format!("/v2/models/digits/versions/{v}");
        assert_error(s.get(&base), 404, &needle);
        assert_error(s.get(&format!("{base}/ready")), 404, &needle);
        assert_error(s.post(&format!("{base}/infer"), &infer), 404, &needle);
    }

    // Unknown routes: 404 with a JSON error body.
    for path in ["/v2/nothing", "/v2/models", "/v2/models/digits/predict"] {
        assert_error(s.get(path), 404, &format!("no route for GET {path}"));
    }
    assert_error(
        s.post("/v2/models/digits/versions/1/score", &infer),
        404,
        "no route for POST",
    );

    // Known routes with the wrong method: 405 with a JSON error body.
    for (method, path) in [
        ("POST", "/v2/health/live"),
        ("POST", "/v2/health/ready"),
        ("DELETE", "/v2"),
        ("GET", "/v2/models/digits/infer"),
        ("PUT", "/v2/models/digits/versions/1/infer"),
        ("DELETE", "/v2/models/digits"),
        ("POST", "/v2/models/digits/ready"),
    ] {
        assert_error(
            s.request(method, path, None, None),
            405,
            &format!("{method} is not allowed on {path}"),
        );
    }
}

#[test]
fn infer_digits_and_fixed_shapes() {
    let s = Server::start(repo_with(&["digits", "add_fixed"]), &[]);

    // A real digits row is classified correctly.
    let flat = s.infer_ok("digits", &digits_flat(1));
    assert_eq!(flat["model_name"], "digits");
    assert_eq!(flat["model_version"], "1");
    assert!(flat.get("id").is_none(), "id without one sent: {flat}");
    assert_eq!(output_names(&flat), ["probabilities", "label"]);
    assert_all_zero(&flat, 1);

    // Nested data gives the identical response.
    assert_eq!(s.infer_ok("digits", &digits_nested(1)), flat);

    // A batch.
    let batch = s.infer_ok("digits", &digits_nested(3));
    assert_all_zero(&batch, 3);
    assert_eq!(s.infer_ok("digits", &digits_flat(3)), batch);

    // The versioned route.
    let (status, v1) = s.post(
        "/v2/models/digits/versions/1/infer",
        &digits_flat(1).to_string(),
    );
    assert_eq!((status, &v1), (200, &flat));

    // `id` is echoed.
    let mut req = digits_flat(1);
    req["id"] = json!("req-42");
    let resp = s.infer_ok("digits", &req);
    assert_eq!(resp["id"], "req-42");

    // `outputs` selects and orders.
    req["outputs"] = json!([{"name": "label"}]);
    let resp = s.infer_ok("digits", &req);
    assert_eq!(output_names(&resp), ["label"]);
    assert_eq!(output(&resp, "label")["data"], json!([0]));
    req["outputs"] = json!([{"name": "label"}, {"name": "probabilities"}]);
    let resp = s.infer_ok("digits", &req);
    assert_eq!(output_names(&resp), ["label", "probabilities"]);
    assert_eq!(
        output(&resp, "probabilities"),
        output(&flat, "probabilities")
    );

    // Whatever the Content-Type, or none, the body is JSON.
    let body = digits_flat(1).to_string();
    assert_eq!(
        s.post_bytes("/v2/models/digits/infer", body.clone().into_bytes()),
        (200, flat.clone())
    );
    assert_eq!(
        s.request(
            "POST",
            "/v2/models/digits/infer",
            Some(body.into()),
            Some("text/plain")
        ),
        (200, flat.clone())
    );

    // A model with fixed shapes and two inputs, given in reverse order.
    let resp = s.infer_ok(
        "add_fixed",
        &json!({"inputs": [
            {"name": "b", "shape": [2, 2], "datatype": "FP32", "data": [[10, 20], [30, 40]]},
            {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [1.5, 2, 3, -4]},
        ]}),
    );
    assert_eq!(
        resp["outputs"],
        json!([{"name": "sum", "datatype": "FP32", "shape": [2, 2], "data": [11.5, 22.0, 33.0, 36.0]}])
    );
}

/// The elements of output `name` in a raw v2 response, each parsed from its JSON text with
/// the standard library's correctly rounded parser (not serde_json's default, which may be
/// off by one unit in the last place).
fn exact_f64s(text: &str, name: &str) -> Vec<f64> {
    #[derive(serde::Deserialize)]
    struct Response<'a> {
        #[serde(borrow)]
        outputs: Vec<Output<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Output<'a> {
        name: String,
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    let resp: Response = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let out = resp
        .outputs
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no output {name}: {text}"));
    out.data
        .get()
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("{v:?}: {e}"))
        })
        .collect()
}

/// The identity_all request with `batch` rows: `fp64` as the FP64 input, zeros elsewhere.
fn identity_request(fp64: &[f64], outputs: &[&str]) -> String {
    assert_eq!(fp64.len() % 3, 0);
    let rows = fp64.len() / 3;
    let inputs: Vec<Value> = [
        ("fp32", "FP32"),
        ("fp64", "FP64"),
        ("int8", "INT8"),
        ("int16", "INT16"),
        ("int32", "INT32"),
        ("int64", "INT64"),
        ("uint8", "UINT8"),
        ("uint16", "UINT16"),
        ("uint32", "UINT32"),
        ("uint64", "UINT64"),
        ("bool", "BOOL"),
    ]
    .iter()
    .map(|(t, dt)| {
        let data = match *t {
            "fp64" => json!(fp64),
            "bool" => json!(vec![false; fp64.len()]),
            _ => json!(vec![0; fp64.len()]),
        };
        json!({"name": format!("x_{t}"), "shape": [rows, 3], "datatype": dt, "data": data})
    })
    .collect();
    let outputs: Vec<Value> = outputs.iter().map(|o| json!({"name": o})).collect();
    json!({"inputs": inputs, "outputs": outputs}).to_string()
}

#[test]
fn every_datatype_round_trips_exactly() {
    let s = Server::start(repo_with(&["identity_all"]), &[]);

    let f32s = [1.5f32, -2.25, 0.1, f32::MAX, f32::MIN, f32::MIN_POSITIVE];
    let f64s = [0.1f64, -1e308, 5e-324, f64::MAX, f64::MIN_POSITIVE, -2.5];
    let cases: Vec<(&str, &str, Value)> = vec![
        ("fp32", "FP32", json!(f32s)),
        ("fp64", "FP64", json!(f64s)),
        ("int8", "INT8", json!([i8::MIN, i8::MAX, 0, -1, 1, 42])),
        ("int16", "INT16", json!([i16::MIN, i16::MAX, 0, -1, 1, 42])),
        ("int32", "INT32", json!([i32::MIN, i32::MAX, 0, -1, 1, 42])),
        (
            "int64",
            "INT64",
            json!([i64::MIN, i64::MAX, 0, -1, 1, 9_007_199_254_740_993i64]),
        ),
        ("uint8", "UINT8", json!([0, u8::MAX, 1, 2, 127, 128])),
        ("uint16", "UINT16", json!([0, u16::MAX, 1, 2, 3, 4])),
        ("uint32", "UINT32", json!([0, u32::MAX, 1, 2, 3, 4])),
        (
            "uint64",
            "UINT64",
            json!([
                u64::MAX,
                0,
                1,
                9_007_199_254_740_993u64,
                u64::MAX - 1,
                1u64 << 63
            ]),
        ),
        (
            "bool",
            "BOOL",
            json!([true, false, false, true, true, false]),
        ),
    ];
    // Inputs in reverse model order; odd ones with nested data.
    let inputs: Vec<Value> = cases
        .iter()
        .rev()
        .enumerate()
        .map(|(i, (t, dt, data))| {
            let data = if i % 2 == 1 {
                let d = data.as_array().unwrap();
                json!([d[..3], d[3..]])
            } else {
                data.clone()
            };
            json!({"name": format!("x_{t}"), "shape": [2, 3], "datatype": dt, "data": data})
        })
        .collect();
    let (status, text) = s.post_text(
        "/v2/models/identity_all/infer",
        &json!({"inputs": inputs}).to_string(),
    );
    assert_eq!(status, 200, "{text}");
    let resp: Value = serde_json::from_str(&text).unwrap();
    let names: Vec<String> = cases.iter().map(|(t, ..)| format!("y_{t}")).collect();
    assert_eq!(output_names(&resp), names, "outputs in model order");
    for (t, dt, data) in &cases {
        let name = format!("y_{t}");
        let out = output(&resp, &name);
        assert_eq!(out["datatype"], *dt, "{out}");
        assert_eq!(out["shape"], json!([2, 3]), "{out}");
        match *t {
            // JSON carries f32 values in their shortest f32 form: compare as f32.
            "fp32" => {
                let got: Vec<f32> = exact_f64s(&text, &name)
                    .into_iter()
                    .map(|v| v as f32)
                    .collect();
                assert_eq!(got, f32s, "{out}");
            }
            "fp64" => assert_eq!(exact_f64s(&text, &name), f64s, "{out}"),
            _ => assert_eq!(&out["data"], data, "{name}"),
        }
    }

    // Selected outputs, in the requested order.
    let mut req = json!({"inputs": inputs});
    req["outputs"] = json!([{"name": "y_bool"}, {"name": "y_uint64"}, {"name": "y_int8"}]);
    let resp = s.infer_ok("identity_all", &req);
    assert_eq!(output_names(&resp), ["y_bool", "y_uint64", "y_int8"]);
    assert_eq!(
        output(&resp, "y_uint64")["data"],
        json!([
            u64::MAX,
            0,
            1,
            9_007_199_254_740_993u64,
            u64::MAX - 1,
            1u64 << 63
        ])
    );

    // An empty batch is a valid request.
    let resp = s.infer_ok(
        "identity_all",
        &serde_json::from_str(&identity_request(&[], &["y_fp64", "y_bool"])).unwrap(),
    );
    assert_eq!(
        resp["outputs"],
        json!([
            {"name": "y_fp64", "datatype": "FP64", "shape": [0, 3], "data": []},
            {"name": "y_bool", "datatype": "BOOL", "shape": [0, 3], "data": []},
        ])
    );
}

/// FP64 values must survive JSON decoding bit for bit. serde_json's default float parser may
/// be off by one ULP; the fix is serde_json's `float_roundtrip` feature in Cargo.toml.
#[test]
fn fp64_values_are_decoded_bit_exactly() {
    let s = Server::start(repo_with(&["identity_all"]), &[]);
    let values = [
        123_456_789.123_456_79f64,
        1.234_567_890_123_456_7e-300,
        2.225_073_858_507_201e-308,
        0.1,
        std::f64::consts::PI,
        std::f64::consts::E,
    ];
    let (status, text) = s.post_text(
        "/v2/models/identity_all/infer",
        &identity_request(&values, &["y_fp64"]),
    );
    assert_eq!(status, 200, "{text}");
    let got = exact_f64s(&text, "y_fp64");
    for (sent, got) in values.iter().zip(&got) {
        assert_eq!(
            sent.to_bits(),
            got.to_bits(),
            "sent {sent:?}, got back {got:?}"
        );
    }
}

/// An FP32 element outside the f32 range must be rejected, not silently turned into infinity
/// (which then comes back as JSON `null`).
#[test]
fn fp32_values_out_of_range_are_rejected() {
    let s = Server::start(repo_with(&["digits"]), &[]);
    let mut data = json!(DIGIT_ZERO.to_vec());
    data[3] = json!(1e39);
    let body =
        json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": data}]});
    assert_error(
        s.post("/v2/models/digits/infer", &body.to_string()),
        400,
        "element 3",
    );
}

#[test]
fn request_errors_are_precise_and_the_server_keeps_serving() {
    let s = Server::start(repo_with(&["digits", "add_fixed", "identity_all"]), &[]);
    let digits = "/v2/models/digits/infer";
    let add = "/v2/models/add_fixed/infer";
    let ident = "/v2/models/identity_all/infer";
    let row: Vec<u8> = DIGIT_ZERO.to_vec();
    let input = |name: &str, shape: Value, dt: &str, data: Value| -> String {
        json!({"inputs": [{"name": name, "shape": shape, "datatype": dt, "data": data}]})
            .to_string()
    };
    let pair = |a: Value| -> String {
        json!({"inputs": [
            {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": a},
            {"name": "b", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
        ]})
        .to_string()
    };

    let cases: Vec<(&str, &str, String, &str)> = vec![
        // Body syntax and structure.
        (
            "malformed JSON",
            digits,
            r#"{"inputs": ["#.into(),
            "malformed inference request",
        ),
        (
            "empty body",
            digits,
            String::new(),
            "malformed inference request",
        ),
        (
            "not an object",
            digits,
            "[1, 2]".into(),
            "malformed inference request",
        ),
        (
            "missing inputs",
            digits,
            "{}".into(),
            "missing field `inputs`",
        ),
        (
            "inputs not an array",
            digits,
            r#"{"inputs": {}}"#.into(),
            "malformed inference request",
        ),
        (
            "id not a string",
            digits,
            {
                let mut r = digits_flat(1);
                r["id"] = json!(7);
                r.to_string()
            },
            "malformed inference request",
        ),
        (
            "missing data",
            digits,
            json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32"}]})
                .to_string(),
            "input 'input': no \"data\"",
        ),
        // Names.
        (
            "unknown input",
            digits,
            input("pixels", json!([1, 64]), "FP32", json!(row)),
            "unknown input 'pixels' (model inputs: input)",
        ),
        (
            "missing required input",
            add,
            input("a", json!([2, 2]), "FP32", json!([1, 2, 3, 4])),
            "missing required input 'b'",
        ),
        (
            "duplicate input",
            add,
            json!({"inputs": [
                {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
                {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
                {"name": "b", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
            ]})
            .to_string(),
            "duplicate input 'a'",
        ),
        (
            "unknown requested output",
            digits,
            {
                let mut r = digits_flat(1);
                r["outputs"] = json!([{"name": "label"}, {"name": "logits"}]);
                r.to_string()
            },
            "unknown output 'logits' (model outputs: probabilities, label)",
        ),
        (
            "output requested twice",
            digits,
            {
                let mut r = digits_flat(1);
                r["outputs"] = json!([{"name": "label"}, {"name": "label"}]);
                r.to_string()
            },
            "output 'label' requested twice",
        ),
        // Types.
        (
            "wrong datatype for the model",
            digits,
            input("input", json!([1, 64]), "INT64", json!(row)),
            "input 'input': datatype INT64 does not match the model's FP32",
        ),
        (
            "unsupported datatype",
            digits,
            input("input", json!([1, 64]), "FP8", json!(row)),
            "input 'input': unsupported datatype 'FP8'",
        ),
        (
            "lower-case datatype",
            digits,
            input("input", json!([1, 64]), "fp32", json!(row)),
            "unsupported datatype 'fp32'",
        ),
        // Shapes.
        (
            "shape that disagrees with the model",
            digits,
            input("input", json!([1, 63]), "FP32", json!(row[..63])),
            "input 'input': shape [1, 63] does not match the model's [-1, 64]",
        ),
        (
            "rank that disagrees with the model",
            digits,
            input("input", json!([64]), "FP32", json!(row)),
            "shape [64] does not match the model's [-1, 64]",
        ),
        (
            "fixed dims that disagree with the model",
            add,
            json!({"inputs": [
                {"name": "a", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
                {"name": "b", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
            ]})
            .to_string(),
            "input 'a': shape [1, 4] does not match the model's [2, 2]",
        ),
        (
            "shape that disagrees with the data (too few)",
            digits,
            input("input", json!([1, 64]), "FP32", json!(row[..63])),
            "input 'input': shape [1, 64] holds 64 elements but \"data\" has 63",
        ),
        (
            "shape that disagrees with the data (too many)",
            digits,
            input(
                "input",
                json!([1, 64]),
                "FP32",
                json!([row.clone(), row.clone()]),
            ),
            "shape [1, 64] holds 64 elements but \"data\" has 128",
        ),
        (
            "negative dim",
            digits,
            input("input", json!([-1, 64]), "FP32", json!(row)),
            "input 'input': shape [-1, 64] has a negative dimension",
        ),
        (
            "overflowing dims",
            digits,
            input(
                "input",
                json!([4_294_967_296u64, 4_294_967_296u64, 4_294_967_296u64]),
                "FP32",
                json!([1]),
            ),
            "input 'input': shape [4294967296, 4294967296, 4294967296] overflows",
        ),
        // Values.
        (
            "non-numeric value",
            digits,
            input("input", json!([1, 64]), "FP32", {
                let mut d = json!(row);
                d[5] = json!("x");
                d
            }),
            "input 'input': element 5: expected an FP32 number, found string \"x\"",
        ),
        (
            "null in nested data",
            digits,
            input("input", json!([2, 64]), "FP32", {
                let mut d = json!([row.clone(), row.clone()]);
                d[1][3] = Value::Null;
                d
            }),
            "element 67: expected an FP32 number, found null",
        ),
        (
            "integer out of range",
            ident,
            input("x_uint8", json!([1, 3]), "UINT8", json!([1, 256, 3])),
            "input 'x_uint8': element 1: expected an integer in the UINT8 range, found 256",
        ),
        (
            "negative unsigned",
            ident,
            input("x_uint64", json!([1, 3]), "UINT64", json!([1, 2, -3])),
            "element 2: expected an integer in the UINT64 range, found -3",
        ),
        (
            "fraction for an integer type",
            ident,
            input("x_int32", json!([1, 3]), "INT32", json!([1.5, 2, 3])),
            "element 0: expected an integer in the INT32 range, found 1.5",
        ),
        (
            "number for a boolean",
            ident,
            input("x_bool", json!([1, 3]), "BOOL", json!([true, 1, false])),
            "element 1: expected a boolean (true/false), found 1",
        ),
        (
            "object as a value",
            add,
            pair(json!([1, {"v": 2}, 3, 4])),
            "element 1: expected an FP32 number, found an object",
        ),
    ];

    for (what, path, body, needle) in &cases {
        let reply = s.post(path, body);
        assert_eq!(reply.0, 400, "{what}: {}", reply.1);
        assert_error(reply, 400, needle);
    }

    // The server keeps serving: valid requests succeed after the error batch.
    assert_all_zero(&s.infer_ok("digits", &digits_flat(1)), 1);
    let resp = s.infer_ok(
        "add_fixed",
        &serde_json::from_str(&pair(json!([1, 1, 1, 1]))).unwrap(),
    );
    assert_eq!(output(&resp, "sum")["data"], json!([2.0, 3.0, 4.0, 5.0]));
    assert_eq!(s.get("/v2/health/ready").0, 200);
}

#[test]
fn body_size_limit() {
    let s = Server::start(repo_with(&["digits"]), &["--max-body-size", "1KiB"]);
    let path = "/v2/models/digits/infer";
    let padded = |len: usize| -> Vec<u8> {
        let mut body = digits_flat(1).to_string().into_bytes();
        assert!(body.len() < len, "request is {} bytes", body.len());
        body.resize(len, b' ');
        body
    };

    // Exactly at the limit and just under it: accepted.
    for len in [1024, 1023] {
        let (status, resp) = s.post_bytes(path, padded(len));
        assert_eq!(status, 200, "{len} bytes: {resp}");
        assert_all_zero(&resp, 1);
    }
    // Over it, with a Content-Length: 413.
    for len in [1025, 2048] {
        assert_error(
            s.post_bytes(path, padded(len)),
            413,
            "request body exceeds the limit of 1024 bytes",
        );
    }
    // Over it, chunked (no Content-Length): 413 as well; under it, chunked: accepted.
    let chunked = |len: usize| reqwest::blocking::Body::new(std::io::Cursor::new(padded(len)));
    assert_error(
        s.request("POST", path, Some(chunked(2048)), Some("application/json")),
        413,
        "exceeds the limit of 1024 bytes",
    );
    assert_eq!(
        s.request("POST", path, Some(chunked(1000)), Some("application/json"))
            .0,
        200
    );
    // The limit is checked before the model is looked up.
    assert_error(
        s.post_bytes("/v2/models/nope/infer", padded(2048)),
        413,
        "exceeds the limit",
    );
    // Still serving.
    assert_all_zero(&s.infer_ok("digits", &digits_flat(1)), 1);
}

#[test]
fn max_batch_size_is_enforced() {
    let repo = repo_with(&["digits"]);
    prepend_config(repo.path(), "digits", "max_batch_size = 2");
    let s = Server::start(repo, &[]);

    assert_all_zero(&s.infer_ok("digits", &digits_flat(1)), 1);
    assert_all_zero(&s.infer_ok("digits", &digits_flat(2)), 2);
    assert_error(
        s.post("/v2/models/digits/infer", &digits_flat(3).to_string()),
        400,
        "input 'input': batch size 3 exceeds the model's max_batch_size 2",
    );
    assert_all_zero(&s.infer_ok("digits", &digits_nested(2)), 2);
}

#[test]
fn broken_models_fail_alone() {
    let repo = repo_with(&["digits"]);
    let broken = repo.path().join("broken/1");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("model.onnx"),
        b"\x00\x01garbage, not a protobuf\xff\xfe",
    )
    .unwrap();
    copy_dir(&model_source("lenet"), &repo.path().join("badconfig"));
    prepend_config(repo.path(), "badconfig", "instancez = 2");
    let s = Server::start(repo, &["--strict-readiness=false"]);

    // The server is ready and the good model serves.
    assert_eq!(s.get("/v2/health/ready").0, 200);
    assert_eq!(s.get("/v2/models/digits/ready").0, 200);
    assert_all_zero(&s.infer_ok("digits", &digits_flat(1)), 1);

    // The broken ones answer 503 with the reason on every route.
    for path in [
        "/v2/models/broken/ready",
        "/v2/models/broken/versions/1/ready",
        "/v2/models/broken",
    ] {
        let msg = assert_error(s.get(path), 503, "model 'broken' version 1 failed to load");
        assert!(msg.contains("model.onnx"), "{msg}");
    }
    let infer =
        json!({"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": [1]}]})
            .to_string();
    assert_error(
        s.post("/v2/models/broken/infer", &infer),
        503,
        "failed to load",
    );
    for path in ["/v2/models/badconfig/ready", "/v2/models/badconfig"] {
        let msg = assert_error(s.get(path), 503, "model 'badconfig' failed to load");
        assert!(
            msg.contains("config.toml") && msg.contains("instancez"),
            "{msg}"
        );
    }
    assert_error(
        s.post("/v2/models/badconfig/infer", &infer),
        503,
        "instancez",
    );
    // The log names both failures.
    let log = s.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("broken") && l.contains("failed to load")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("badconfig") && l.contains("instancez")),
        "{log}"
    );

    // The good model still serves afterwards.
    assert_all_zero(&s.infer_ok("digits", &digits_flat(2)), 2);
}

#[test]
fn serves_the_sample_repository() {
    let s = Server::start_at(&common::root().join("models"), &[]);
    for (model, input, output) in [
        ("digits", json!([-1, 64]), json!([-1, 10])),
        ("lenet", json!([-1, 1, 28, 28]), json!([-1, 10])),
        ("resnet", json!([-1, 3, 224, 224]), json!([-1, 1000])),
    ] {
        let (status, meta) = s.get(&format!("/v2/models/{model}"));
        assert_eq!(status, 200, "{model}: {meta}");
        assert_eq!(meta["versions"], json!(["1"]));
        assert_eq!(meta["platform"], "onnx_onnxv1");
        assert_eq!(meta["inputs"][0]["shape"], input, "{model}");
        assert_eq!(meta["inputs"][0]["datatype"], "FP32", "{model}");
        assert_eq!(meta["outputs"][0]["shape"], output, "{model}");
        assert_eq!(s.get(&format!("/v2/models/{model}/ready")).0, 200);
    }
    let resp = s.infer_ok(
        "lenet",
        &json!({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": vec![0.5; 784]}]}),
    );
    let logits = output(&resp, "logits");
    assert_eq!(logits["shape"], json!([1, 10]));
    assert!(logits["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v.as_f64().is_some_and(f64::is_finite)));
    assert_all_zero(&s.infer_ok("digits", &digits_flat(1)), 1);
}

#[test]
fn large_requests_do_not_hold_up_the_others() {
    // 75 000 rows: over the auto-completed max_batch_size, so auto-complete is off.
    let s = Server::start(repo_with(&["digits"]), &["--default-max-batch-size", "0"]);
    // About 30 MB of JSON each, parsed and answered (~470 k output values) in seconds.
    let rows = 75_000;
    let big = format!(
        r#"{{"inputs":[{{"name":"input","shape":[{rows},64],"datatype":"FP32","data":[{}]}}]}}"#,
        vec!["0.5"; rows * 64].join(",")
    );
    let path = "/v2/models/digits/infer";
    std::thread::scope(|scope| {
        let big_requests: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| s.post_text(path, &big)))
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let started = std::time::Instant::now();
        let (status, body) = s.get("/v2/health/live");
        let took = started.elapsed();
        let still_running = big_requests.iter().filter(|h| !h.is_finished()).count();
        assert_eq!(status, 200, "{body}");
        for h in big_requests {
            let (status, text) = h.join().unwrap();
            assert_eq!(status, 200, "{}", &text[..text.len().min(300)]);
        }
        assert!(
            still_running > 0,
            "inconclusive: the large requests were done before the probe; make them larger"
        );
        // Decoding and encoding run off the executor: a probe is answered at once, not
        // after the large requests (which take seconds here).
        assert!(
            took < std::time::Duration::from_secs(1),
            "GET /v2/health/live took {took:?} behind {still_running} large requests"
        );
    });
}

#[test]
fn a_body_is_read_only_when_its_model_has_room() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let s = Server::start(repo_with(&["digits", "lenet"]), &[]);
    let path = "/v2/models/digits/infer";
    // digits' room is the floor, 4 MiB (its rows are 256 bytes). A client declares a body
    // that takes all of it and sends its first byte only: the server reads it (admitted),
    // waiting for the rest.
    let mut hog = std::net::TcpStream::connect(&s.addr).unwrap();
    hog.write_all(
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{{",
            4 << 20
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Bodies over 16 KiB take room (smaller ones go ahead): this one is padded.
    let padded = format!("{}{}", digits_flat(1), " ".repeat(20 << 10));
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| s.post(path, &padded));
        std::thread::sleep(Duration::from_millis(1500));
        if waiting.is_finished() {
            panic!(
                "a digits request was read and answered while another's body held all of digits' room: {:?}",
                waiting.join().unwrap()
            );
        }
        // Other models have rooms of their own, and the server keeps answering.
        let lenet = json!({"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": vec![0.0; 784]}]});
        let started = Instant::now();
        s.infer_ok("lenet", &lenet);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(s.get("/v2/health/ready").0, 200);
        // So does a small digits request.
        assert_all_zero(&s.infer_ok("digits", &digits_flat(1)), 1);
        // The client that held the room goes away: its room is given back, and the waiting
        // request is read and answered.
        drop(hog);
        let started = Instant::now();
        while !waiting.is_finished() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let (status, body) = waiting.join().unwrap();
        assert_eq!(status, 200, "{body}");
        assert_all_zero(&body, 1);
    });
}

/// Sends `raw` on a fresh connection and reads until the server closes it (or `wait`
/// passes): what came back, and whether the server closed the connection.
fn raw_exchange(addr: &str, raw: &[u8], wait: std::time::Duration) -> (String, bool) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(wait)).unwrap();
    c.write_all(raw).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match c.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[test]
fn header_blocks_over_16_kib_get_431_and_the_server_keeps_serving() {
    let s = Server::start(repo_with(&["digits"]), &[]);
    let wait = std::time::Duration::from_secs(10);
    let request = |pad: usize| {
        let head = format!(
            "GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(pad)
        );
        raw_exchange(&s.addr, head.as_bytes(), wait).0
    };
    let fits = request(12 << 10);
    assert!(fits.starts_with("HTTP/1.1 200"), "{fits:?}");
    let over = request(20 << 10);
    assert!(over.starts_with("HTTP/1.1 431"), "{over:?}");
    assert_eq!(s.get("/v2/health/ready").0, 200);
}

#[test]
fn stalled_clients_are_cut_off_and_compressed_bodies_decoded() {
    use std::io::Write;
    let s = Server::start(
        repo_with(&["digits"]),
        &["--client-timeout", "1s", "--max-body-size", "1MiB"],
    );
    let path = "/v2/models/digits/infer";
    let wait = std::time::Duration::from_secs(10);
    // Half-sent headers: the connection is closed after the timeout.
    let started = std::time::Instant::now();
    let (got, closed) = raw_exchange(&s.addr, b"GET /v2 HTTP/1.1\r\nHost: x\r\n", wait);
    assert!(closed, "a half-sent request kept its connection: {got:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // A body that stops: 408 with the reason.
    let (got, _) = raw_exchange(
        &s.addr,
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{").as_bytes(),
        wait,
    );
    assert!(
        got.starts_with("HTTP/1.1 408") && got.contains("stalled"),
        "{got:?}"
    );

    // gzip and deflate bodies (tritonclient's request compression) are decoded.
    let plain = digits_flat(2).to_string();
    let expected = s.post(path, &plain);
    assert_eq!(expected.0, 200, "{}", expected.1);
    let compress = |gzip: bool, data: &[u8]| -> Vec<u8> {
        if gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        } else {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
    };
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let post = |encoding: &str, body: Vec<u8>| -> (u16, Value) {
        let resp = client
            .post(s.url(path))
            .header("Content-Encoding", encoding)
            .body(body)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap())
    };
    for (encoding, gzip) in [("gzip", true), ("deflate", false)] {
        let got = post(encoding, compress(gzip, plain.as_bytes()));
        assert_eq!(got, expected, "{encoding}");
    }
    // A small body that inflates past --max-body-size: 413, not a 1 MiB+ allocation.
    let bomb = compress(true, &vec![b' '; 4 << 20]);
    let (status, body) = post("gzip", bomb);
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("decompresses to over"),
        "{body}"
    );
    let (status, body) = post("gzip", b"not gzip".to_vec());
    assert_eq!(status, 400, "{body}");
    let (status, body) = post("br", plain.clone().into_bytes());
    assert_eq!(status, 415, "{body}");
    assert!(body["error"].as_str().unwrap().contains("'br'"), "{body}");
    // Still serving.
    assert_eq!(s.post(path, &plain), expected);
}

#[test]
fn requests_of_the_wrong_shape_and_odd_paths_get_json_errors() {
    let s = Server::start(repo_with(&["digits"]), &[]);
    let infer = "/v2/models/digits/infer";
    let row: Vec<u8> = DIGIT_ZERO.to_vec();
    // Arrays in place of objects (serde would take them positionally) are refused.
    for (body, want) in [
        (
            json!(["id", [["input", [1, 64], "FP32", row]]]),
            "expected a JSON object",
        ),
        (
            json!({"inputs": [["input", [1, 64], "FP32", row]]}),
            "inputs[0]: invalid type: sequence, expected a JSON object",
        ),
        (
            json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}],
                   "outputs": [{"name": "label", "parameters": {"binary_data": "yes"}}]}),
            "outputs[0].parameters.binary_data: invalid type: string",
        ),
    ] {
        assert_error(s.post(infer, &body.to_string()), 400, want);
    }
    // `parameters: null` is no parameters.
    let body = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                                  "data": row, "parameters": null}],
                      "parameters": null});
    let (status, resp) = s.post(infer, &body.to_string());
    assert_eq!(status, 200, "{resp}");

    // Paths that are not UTF-8 are JSON errors on every route that takes a model name.
    for path in [
        "/models/%ff/score",
        "/v2/repository/models/%ff/load",
        "/v2/repository/models/%ff/unload",
    ] {
        assert_error(s.post(path, "{}"), 400, "invalid model path");
    }
    // Triton's load parameters (a config override) are refused, not silently ignored.
    assert_error(
        s.post(
            "/v2/repository/models/digits/load",
            r#"{"parameters": {"config": "{}"}}"#,
        ),
        400,
        "load parameters are not supported (config)",
    );
    let (status, resp) = s.post("/v2/repository/models/digits/load", r#"{"parameters": {}}"#);
    assert_eq!(status, 200, "{resp}");
    let (status, resp) = s.post("/v2/repository/models/digits/load", "");
    assert_eq!(status, 200, "{resp}");
}

/// Strict readiness (the default, as Triton's): while a model that should serve has failed,
/// the server is not ready and says which; unloading that model makes it ready.
/// `--strict-readiness=false` is ready with the models that loaded.
#[test]
fn strict_readiness_waits_for_every_model() {
    let broken = |repo: &tempfile::TempDir| {
        std::fs::write(repo.path().join("add_fixed/1/model.onnx"), b"not a model").unwrap();
    };
    let repo = repo_with(&["digits", "add_fixed"]);
    broken(&repo);
    let s = Server::start_live(repo, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while s.get("/v2/models/digits/ready").0 != 200
        || s.get("/v2/models/add_fixed/ready")
            .1
            .to_string()
            .contains("loading")
    {
        assert!(std::time::Instant::now() < deadline, "{}", s.stderr());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let msg = assert_error(
        s.get("/v2/health/ready"),
        503,
        "model 'add_fixed' version 1 failed to load",
    );
    assert!(msg.contains("--strict-readiness=false"), "{msg}");
    assert_eq!(
        s.post("/v2/repository/models/add_fixed/unload", "{}").0,
        200
    );
    assert_eq!(s.get("/v2/health/ready"), (200, json!({"ready": true})));

    let repo = repo_with(&["digits", "add_fixed"]);
    broken(&repo);
    let s = Server::start(repo, &["--strict-readiness=false"]);
    assert_eq!(s.get("/v2/health/ready"), (200, json!({"ready": true})));
    assert_eq!(s.get("/v2/models/add_fixed/ready").0, 503);
    let out = common::scoria_command()
        .args(["serve", "--strict-readiness", "maybe"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

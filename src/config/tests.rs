use super::*;

fn repo_hw() -> Vec<PathBuf> {
    vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hw")]
}

#[test]
fn shipped_example_parses_commented_and_uncommented() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/avsd.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let commented = Config::from_toml(&text, &path, &repo_hw()).unwrap();
    assert_eq!(
        commented.cloud.endpoint.as_str(),
        "https://alexa.na.gateway.devices.a2z.com/"
    );
    assert_eq!(commented.audio.period, Duration::from_millis(20));

    // Every documented default, uncommented, must parse to the same values.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest.to_owned(),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let all = Config::from_toml(&uncommented, &path, &repo_hw()).unwrap();
    assert_eq!(all.hardware_profile.as_deref(), Some("respeaker-2mic"));
    assert_eq!(all.audio.capture_channel, Some(0));
    assert_eq!(all.mixer_control.as_deref(), Some("Speaker"));
    assert_eq!(all.initial_volume, 50);
}

#[test]
fn every_profile_loads_and_config_wins() {
    for entry in std::fs::read_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("hw")).unwrap() {
        let name = entry
            .unwrap()
            .path()
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text =
            format!("[hardware]\nprofile = {name:?}\n[audio]\noutput = \"wav:/tmp/x.wav\"\n");
        let c = Config::from_toml(&text, Path::new("t.toml"), &repo_hw()).unwrap();
        assert_eq!(c.audio.output, "wav:/tmp/x.wav", "{name}");
        assert!(c.audio.input.starts_with("alsa:"), "{name}");
    }
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("[audio]\nperiod_ms = 50\n", "audio.period_ms"),
        ("[cloud]\nregion = \"XX\"\n", "cloud.region"),
        ("[cloud]\nendpoint = \"http://x\"\n", "cloud.endpoint"),
        ("[audio]\nduck_level = 3.0\n", "audio.duck_level"),
        ("[dialog]\nprofile = \"LOUD\"\n", "dialog.profile"),
        (
            "[device]\nfirmware_version = \"0\"\n",
            "device.firmware_version",
        ),
        ("[audio]\nbogus = 1\n", "bogus"),
        ("[nonsense]\n", "nonsense"),
        (
            "[hardware]\nprofile = \"no-such-board\"\n",
            "hardware.profile",
        ),
    ];
    for (text, key) in cases {
        let err = Config::from_toml(text, Path::new("t.toml"), &repo_hw())
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{text:?} gave {err:?}");
    }
}

#[test]
fn effective_config_is_toml_with_every_section() {
    let c = Config::from_toml(
        "[cloud]\nregion = \"EU\"\n",
        Path::new("t.toml"),
        &repo_hw(),
    )
    .unwrap();
    let table: toml::Table = toml::from_str(&c.to_effective_toml()).unwrap();
    assert_eq!(
        table["cloud"]["endpoint"].as_str(),
        Some("https://alexa.eu.gateway.devices.a2z.com/")
    );
    for section in [
        "device", "cloud", "paths", "audio", "dialog", "hardware", "log",
    ] {
        assert!(table.contains_key(section), "{section}");
    }
}

#[test]
fn discovery_identity_has_defaults_and_refuses_empty_values() {
    let p = Path::new("t.toml");
    let c = Config::from_toml("", p, &[]).unwrap();
    assert_eq!(c.device.manufacturer, "avsd");
    assert!(!c.device.model.is_empty() && !c.device.description.is_empty());
    let c = Config::from_toml(
        "[device]\nmanufacturer = \"Acme\"\nmodel = \"X1\"\ndescription = \"Kitchen speaker\"\n",
        p,
        &[],
    )
    .unwrap();
    assert_eq!(
        (
            c.device.manufacturer.as_str(),
            c.device.model.as_str(),
            c.device.description.as_str()
        ),
        ("Acme", "X1", "Kitchen speaker")
    );
    let err = Config::from_toml("[device]\nmodel = \" \"\n", p, &[]).unwrap_err();
    assert!(err.to_string().starts_with("device.model:"), "{err}");
    let long = "x".repeat(129);
    let err =
        Config::from_toml(&format!("[device]\ndescription = \"{long}\"\n"), p, &[]).unwrap_err();
    assert!(err.to_string().starts_with("device.description:"), "{err}");
}

#[test]
fn buttons_and_leds_are_typed_and_their_errors_name_the_key() {
    let text = "[hardware]\nprofile = \"respeaker-2mic\"\n";
    let c = Config::from_toml(text, Path::new("t.toml"), &repo_hw()).unwrap();
    let b = c.buttons.expect("the profile's button");
    assert_eq!(b.device, "button@11");
    assert_eq!(b.keys, [(582, crate::hw::buttons::ButtonAction::Listen)]);
    assert_eq!(
        c.leds,
        LedsConfig::Apa102 {
            spi: PathBuf::from("/dev/spidev0.0"),
            count: 3,
            brightness: 8,
            spi_hz: 8_000_000
        }
    );
    let text = "[buttons]\ndevice = \"/dev/input/event1\"\nkeys = { KEY_NEXTSONG = \"next\", 164 = \"play_pause\" }\n[leds]\ndriver = \"sysfs\"\nnames = [\"led0\"]\n";
    let c = Config::from_toml(text, Path::new("t.toml"), &repo_hw()).unwrap();
    assert_eq!(c.buttons.as_ref().map(|b| b.keys.len()), Some(2));
    let back: toml::Table = toml::from_str(&c.to_effective_toml()).unwrap();
    assert_eq!(
        back["buttons"]["keys"]["KEY_PLAYPAUSE"].as_str(),
        Some("play_pause")
    );
    assert_eq!(back["leds"]["names"][0].as_str(), Some("led0"));
    assert!(Config::defaults().unwrap().buttons.is_none());

    let cases = [
        (
            "[buttons]\ndevice = \"x\"\nkeys = { KEY_BOGUS = \"listen\" }\n",
            "buttons.keys",
        ),
        (
            "[buttons]\ndevice = \"x\"\nkeys = { KEY_ENTER = \"dance\" }\n",
            "buttons.keys",
        ),
        ("[buttons]\ndevice = \"x\"\n", "buttons.keys"),
        ("[buttons]\ndebounce_ms = 9000\n", "buttons.debounce_ms"),
        ("[buttons]\ngpio = 17\n", "gpio"),
        ("[leds]\ndriver = \"neon\"\n", "leds.driver"),
        (
            "[leds]\ndriver = \"apa102\"\nbrightness = 40\n",
            "leds.brightness",
        ),
        ("[leds]\ndriver = \"apa102\"\ncount = 0\n", "leds.count"),
        ("[leds]\ndriver = \"sysfs\"\n", "leds.names"),
    ];
    for (text, key) in cases {
        let err = Config::from_toml(text, Path::new("t.toml"), &repo_hw())
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{text:?} gave {err:?}");
    }
}

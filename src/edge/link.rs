//! One interface over rumqttc's MQTT 3.1.1 and MQTT 5 clients, reduced to what the driver
//! uses: connect options, QoS 1 publishes (with correlation data on MQTT 5), manual acks,
//! subscriptions, and the events the driver reacts to.

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as m5;
use std::time::Duration;

/// The MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V311,
    V5,
}

/// Transport security.
#[derive(Debug, Clone)]
pub enum Security {
    Plain,
    /// TLS, verifying the broker with `ca` (PEM) or, when `None`, the system's roots.
    Tls {
        ca: Option<Vec<u8>>,
    },
}

/// Everything needed to connect.
#[derive(Debug, Clone)]
pub struct LinkOptions {
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub client_id: String,
    pub keep_alive: Duration,
    pub credentials: Option<(String, String)>,
    /// Topic, payload and retain flag of the last will.
    pub last_will: (String, Bytes, bool),
    /// Most unacknowledged publishes in flight.
    pub inflight: u16,
    /// MQTT 5 session expiry in seconds (`None`: never, u32::MAX). MQTT 3.1.1 sessions last
    /// as long as the broker keeps them.
    pub session_expiry: Option<u32>,
}

/// A received publish, with what its ack needs.
#[derive(Debug, Clone)]
pub struct InMsg {
    pub topic: String,
    pub payload: Bytes,
    /// Redelivered by the broker (the DUP flag).
    pub dup: bool,
    pub ack: AckHandle,
    pub response_topic: Option<String>,
    pub correlation: Option<Bytes>,
}

/// What acknowledging a received publish takes.
#[derive(Debug, Clone, Copy)]
pub struct AckHandle {
    pkid: u16,
    qos: u8,
}

/// Events the driver reacts to.
#[derive(Debug)]
pub enum Ev {
    Connected {
        session_present: bool,
    },
    Publish(InMsg),
    /// The broker answered our publish `pkid`: took it, or (MQTT 5) `refused` it with the
    /// reason code's meaning.
    PubAck {
        pkid: u16,
        refused: Option<&'static str>,
    },
    /// Our publish went out with packet id `pkid` (in the order publishes were queued).
    Sent(u16),
    /// The broker answered a subscribe: per filter, in the order subscribed, `None` when
    /// granted or the refusal's meaning.
    SubAck(Vec<Option<SubRefusal>>),
    /// The broker answered an unsubscribe.
    UnsubAck,
    Other,
}

/// Why the broker refused a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubRefusal {
    /// MQTT 5 reason 0x9E: the broker does not support shared subscriptions.
    SharedNotSupported,
    /// Any other refusal, with the reason code's meaning.
    Other(&'static str),
}

impl std::fmt::Display for SubRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubRefusal::SharedNotSupported => {
                f.write_str("shared subscriptions not supported (0x9E)")
            }
            SubRefusal::Other(why) => f.write_str(why),
        }
    }
}

/// A failed poll.
#[derive(Debug)]
pub enum LinkError {
    /// The broker refused the connection (bad credentials, not authorized, ...): retrying
    /// cannot help.
    Refused(String),
    /// Anything else: the connection is retried.
    Transient(String),
}

#[derive(Clone)]
pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

pub enum EventLoop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// Capacity of the request channel between client handles and the event loop.
const CHANNEL: usize = 4096;

/// The largest packet MQTT can frame (a remaining length of 268,435,455 bytes). The link
/// reads and writes packets up to this size whatever `--max-message-size` says: a packet
/// over rumqttc's limit errors the whole connection, so the broker would redeliver an
/// oversized request forever and nothing behind it would be answered. Requests over
/// `--max-message-size` are read whole and answered with an error result instead (see
/// [`super::message::parse_request`]). On MQTT 5 this is also the maximum packet size the
/// module advertises, so the broker does not silently drop larger requests.
pub const MQTT_MAX_PACKET: usize = 268_435_455;

/// Creates the client and its event loop (nothing connects until the first poll).
pub fn create(o: &LinkOptions) -> Result<(Client, EventLoop), String> {
    let transport = match &o.security {
        Security::Plain => rumqttc::Transport::Tcp,
        Security::Tls { ca } => rumqttc::Transport::Tls(tls_config(ca.as_deref())?),
    };
    Ok(match o.protocol {
        Protocol::V311 => {
            let mut opts = rumqttc::MqttOptions::new(&o.client_id, &o.host, o.port);
            opts.set_keep_alive(o.keep_alive)
                .set_clean_session(false)
                .set_manual_acks(true)
                .set_inflight(o.inflight)
                .set_request_channel_capacity(CHANNEL)
                .set_max_packet_size(MQTT_MAX_PACKET, MQTT_MAX_PACKET)
                .set_transport(transport)
                .set_last_will(rumqttc::LastWill::new(
                    &o.last_will.0,
                    o.last_will.1.to_vec(),
                    rumqttc::QoS::AtLeastOnce,
                    o.last_will.2,
                ));
            if let Some((u, p)) = &o.credentials {
                opts.set_credentials(u, p);
            }
            let (c, mut l) = rumqttc::AsyncClient::new(opts, CHANNEL);
            l.set_network_options(network_options());
            (Client::V4(c), EventLoop::V4(Box::new(l)))
        }
        Protocol::V5 => {
            let mut opts = rumqttc::v5::MqttOptions::new(&o.client_id, &o.host, o.port);
            opts.set_keep_alive(o.keep_alive)
                .set_clean_start(false)
                // The session outlives the connection (MQTT 5 ends it at disconnect by default).
                .set_session_expiry_interval(Some(o.session_expiry.unwrap_or(u32::MAX)))
                .set_manual_acks(true)
                .set_outgoing_inflight_upper_limit(o.inflight)
                .set_request_channel_capacity(CHANNEL)
                .set_max_packet_size(Some(MQTT_MAX_PACKET as u32))
                .set_transport(transport)
                .set_network_options(network_options())
                .set_last_will(m5::LastWill::new(
                    &o.last_will.0,
                    o.last_will.1.to_vec(),
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    o.last_will.2,
                    None,
                ));
            if let Some((u, p)) = &o.credentials {
                opts.set_credentials(u, p);
            }
            let (c, l) = rumqttc::v5::AsyncClient::new(opts, CHANNEL);
            (Client::V5(c), EventLoop::V5(Box::new(l)))
        }
    })
}

/// TCP_NODELAY: results and acks are small and latency-bound; Nagle's algorithm with
/// delayed acknowledgements would add tens of milliseconds to each round trip.
fn network_options() -> rumqttc::NetworkOptions {
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n
}

fn tls_config(ca: Option<&[u8]>) -> Result<rumqttc::TlsConfiguration, String> {
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(pem) => {
            let mut reader = std::io::BufReader::new(pem);
            for cert in rustls_pemfile_certs(&mut reader)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("bad CA certificate: {e}"))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err("no CA certificate to verify the broker with".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(rumqttc::TlsConfiguration::Rustls(Arc::new(config)))
}

/// The certificates of a PEM bundle.
fn rustls_pemfile_certs(
    reader: &mut dyn std::io::BufRead,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut text = Vec::new();
    reader
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read the CA file: {e}"))?;
    let certs: Result<Vec<_>, _> =
        rustls::pki_types::CertificateDer::pem_slice_iter(&text).collect();
    let certs = certs.map_err(|e| format!("the CA file is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("the CA file holds no certificate".into());
    }
    Ok(certs)
}

impl Client {
    /// Queues a QoS 1 publish without waiting; fails when the request channel is full.
    pub fn try_publish(
        &self,
        topic: &str,
        payload: Bytes,
        retain: bool,
        correlation: Option<Bytes>,
    ) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload.to_vec())
                .map_err(|e| e.to_string()),
            Client::V5(c) => {
                let props = m5::PublishProperties {
                    correlation_data: correlation,
                    ..Default::default()
                };
                c.try_publish_with_properties(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    retain,
                    payload,
                    props,
                )
                .map_err(|e| e.to_string())
            }
        }
    }

    /// Acknowledges a received publish.
    pub async fn ack(&self, h: AckHandle) -> Result<(), String> {
        match self {
            Client::V4(c) => {
                let qos = rumqttc::qos(h.qos).map_err(|e| e.to_string())?;
                let mut p = rumqttc::Publish::new("", qos, Vec::new());
                p.pkid = h.pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                let qos = rumqttc::v5::mqttbytes::qos(h.qos).ok_or("bad QoS")?;
                let mut p = m5::Publish::new("", qos, Vec::new(), None);
                p.pkid = h.pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
        }
    }

    /// Subscribes to `filters` at QoS 1.
    pub fn try_subscribe(&self, filters: &[String]) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_subscribe_many(
                    filters.iter().map(|f| {
                        rumqttc::SubscribeFilter::new(f.clone(), rumqttc::QoS::AtLeastOnce)
                    }),
                )
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe_many(
                    filters.iter().map(|f| {
                        m5::Filter::new(f.clone(), rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                    }),
                )
                .map_err(|e| e.to_string()),
        }
    }

    /// Unsubscribes from `filters`.
    pub fn try_unsubscribe(&self, filters: &[String]) -> Result<(), String> {
        for f in filters {
            match self {
                Client::V4(c) => c.try_unsubscribe(f.clone()).map_err(|e| e.to_string())?,
                Client::V5(c) => c.try_unsubscribe(f.clone()).map_err(|e| e.to_string())?,
            }
        }
        Ok(())
    }

    pub async fn disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        };
    }
}

impl EventLoop {
    /// The next event; reconnects after an error on the next call.
    pub async fn poll(&mut self) -> Result<Ev, LinkError> {
        match self {
            EventLoop::V4(l) => match l.poll().await {
                Ok(rumqttc::Event::Incoming(p)) => Ok(v4_incoming(p)),
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                    Ok(Ev::Sent(pkid))
                }
                Ok(rumqttc::Event::Outgoing(_)) => Ok(Ev::Other),
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                    Err(LinkError::Refused(format!("{code:?}")))
                }
                Err(e) => Err(LinkError::Transient(e.to_string())),
            },
            EventLoop::V5(l) => match l.poll().await {
                Ok(rumqttc::v5::Event::Incoming(p)) => Ok(v5_incoming(p)),
                Ok(rumqttc::v5::Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                    Ok(Ev::Sent(pkid))
                }
                Ok(rumqttc::v5::Event::Outgoing(_)) => Ok(Ev::Other),
                Err(rumqttc::v5::ConnectionError::ConnectionRefused(code))
                | Err(rumqttc::v5::ConnectionError::MqttState(
                    rumqttc::v5::StateError::ConnFail { reason: code },
                )) => Err(LinkError::Refused(format!("{code:?}"))),
                Err(e) => Err(LinkError::Transient(e.to_string())),
            },
        }
    }

    /// Sets the credentials the next connection attempt uses.
    pub fn set_credentials(&mut self, username: &str, password: &str) {
        match self {
            EventLoop::V4(l) => {
                l.mqtt_options.set_credentials(username, password);
            }
            EventLoop::V5(l) => {
                l.options.set_credentials(username, password);
            }
        }
    }

    /// Forgets the publishes rumqttc kept to replay after a reconnect (and requests queued
    /// but not sent): the driver replays from its outbox instead, so it knows which packet
    /// id carries which record.
    pub fn drop_pending(&mut self) {
        match self {
            EventLoop::V4(l) => l.pending.clear(),
            EventLoop::V5(l) => l.pending.clear(),
        }
    }
}

fn v4_incoming(p: rumqttc::Packet) -> Ev {
    use rumqttc::Packet;
    match p {
        Packet::ConnAck(c) => Ev::Connected {
            session_present: c.session_present,
        },
        Packet::Publish(p) => Ev::Publish(InMsg {
            topic: p.topic,
            payload: p.payload,
            dup: p.dup,
            ack: AckHandle {
                pkid: p.pkid,
                qos: p.qos as u8,
            },
            response_topic: None,
            correlation: None,
        }),
        Packet::PubAck(a) => Ev::PubAck {
            pkid: a.pkid,
            refused: None,
        },
        Packet::SubAck(a) => Ev::SubAck(
            a.return_codes
                .iter()
                .map(|c| match c {
                    rumqttc::SubscribeReasonCode::Success(_) => None,
                    rumqttc::SubscribeReasonCode::Failure => {
                        Some(SubRefusal::Other("failure (0x80)"))
                    }
                })
                .collect(),
        ),
        Packet::UnsubAck(_) => Ev::UnsubAck,
        _ => Ev::Other,
    }
}

fn v5_incoming(p: m5::Packet) -> Ev {
    use m5::Packet;
    match p {
        Packet::ConnAck(c) => Ev::Connected {
            session_present: c.session_present,
        },
        Packet::Publish(p) => {
            let (response_topic, correlation) = p
                .properties
                .map_or((None, None), |pr| (pr.response_topic, pr.correlation_data));
            Ev::Publish(InMsg {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload,
                dup: p.dup,
                ack: AckHandle {
                    pkid: p.pkid,
                    qos: p.qos as u8,
                },
                response_topic,
                correlation,
            })
        }
        Packet::PubAck(a) => Ev::PubAck {
            pkid: a.pkid,
            refused: refusal(&a.reason),
        },
        Packet::SubAck(a) => Ev::SubAck(a.return_codes.iter().map(sub_refusal).collect()),
        Packet::UnsubAck(_) => Ev::UnsubAck,
        _ => Ev::Other,
    }
}

/// What an MQTT 5 PUBACK reason code that refuses a publish means; `None` when the broker
/// took it ("no matching subscribers" is taken: it is stored for none).
fn refusal(reason: &m5::PubAckReason) -> Option<&'static str> {
    use m5::PubAckReason as R;
    match reason {
        R::Success | R::NoMatchingSubscribers => None,
        R::UnspecifiedError => Some("unspecified error (0x80)"),
        R::ImplementationSpecificError => Some("implementation specific error (0x83)"),
        R::NotAuthorized => Some("not authorized (0x87)"),
        R::TopicNameInvalid => Some("topic name invalid (0x90)"),
        R::PacketIdentifierInUse => Some("packet identifier in use (0x91)"),
        R::QuotaExceeded => Some("quota exceeded (0x97)"),
        R::PayloadFormatInvalid => Some("payload format invalid (0x99)"),
    }
}

/// What an MQTT 5 SUBACK reason code means; `None` when the subscription was granted.
fn sub_refusal(code: &m5::SubscribeReasonCode) -> Option<SubRefusal> {
    use m5::SubscribeReasonCode as C;
    let why = match code {
        C::Success(_) => return None,
        C::SharedSubscriptionsNotSupported => return Some(SubRefusal::SharedNotSupported),
        C::Failure | C::Unspecified => "unspecified error (0x80)",
        C::ImplementationSpecific => "implementation specific error (0x83)",
        C::NotAuthorized => "not authorized (0x87)",
        C::TopicFilterInvalid => "topic filter invalid (0x8F)",
        C::PkidInUse => "packet identifier in use (0x91)",
        C::QuotaExceeded => "quota exceeded (0x97)",
        C::SubscriptionIdNotSupported => "subscription identifiers not supported (0xA1)",
        C::WildcardSubscriptionsNotSupported => "wildcard subscriptions not supported (0xA2)",
    };
    Some(SubRefusal::Other(why))
}

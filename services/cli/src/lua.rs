//! `parsec lua deploy | call | read`: use Lua contracts from the command line.

use bytes::Bytes;
use parsec_bench::AgentPool;
use parsec_core::display_key;
use parsec_proto as pb;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum LuaCommand {
    /// Store a contract (Lua 5.4 source) under a key, after checking that it compiles.
    Deploy {
        /// The key to store it under, e.g. `contracts/escrow`.
        #[arg(long)]
        key: String,
        /// The contract's source file.
        file: PathBuf,
    },
    /// Call a contract and print what it wrote (or, with --read-only, what it returned).
    Call {
        /// The key the contract is stored under.
        #[arg(long)]
        key: String,
        /// The argument as text.
        #[arg(long, conflicts_with_all = ["param_hex", "param_file"])]
        param: Option<String>,
        /// The argument as hex bytes (with or without 0x).
        #[arg(long, conflicts_with = "param_file")]
        param_hex: Option<String>,
        /// The argument read from a file.
        #[arg(long)]
        param_file: Option<PathBuf>,
        /// Take read locks only and write nothing.
        #[arg(long)]
        read_only: bool,
    },
    /// Print the committed values of keys (no ticket, no locks).
    Read {
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

pub async fn run(
    agent: &str,
    command: LuaCommand,
    json: bool,
    tls: Option<&parsec_transport::Tls>,
) -> Result<(), String> {
    let pool = AgentPool::connect(&[agent.to_owned()], tls)
        .await
        .map_err(|e| e.to_string())?;
    let mut client = pool.agent(0);
    match command {
        LuaCommand::Deploy { key, file } => {
            let code =
                std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let reply = client
                .deploy(pb::DeployRequest {
                    key: Bytes::from(key.clone()),
                    code: Bytes::from(code),
                    runtime: pb::Runtime::Lua as i32,
                })
                .await
                .map_err(|status| status.message().to_owned())?
                .into_inner();
            if let Some(error) = reply.error {
                return Err(agent_error(&error));
            }
            println!("deployed {key} (ticket {})", reply.ticket);
        }
        LuaCommand::Call {
            key,
            param,
            param_hex,
            param_file,
            read_only,
        } => {
            let param = match (param, param_hex, param_file) {
                (Some(text), _, _) => Bytes::from(text),
                (_, Some(hex), _) => Bytes::from(parse_hex(&hex)?),
                (_, _, Some(file)) => Bytes::from(
                    std::fs::read(&file)
                        .map_err(|e| format!("cannot read {}: {e}", file.display()))?,
                ),
                _ => Bytes::new(),
            };
            let reply = client
                .execute(pb::ExecuteRequest {
                    contract: Bytes::from(key),
                    param,
                    read_only,
                    runtime: pb::Runtime::Lua as i32,
                })
                .await
                .map_err(|status| status.message().to_owned())?
                .into_inner();
            if let Some(error) = &reply.error {
                return Err(agent_error(error));
            }
            let entries = if read_only { reply.reads } else { reply.writes };
            print_entries(&entries, json);
            if !json {
                eprintln!("ticket {}, {} attempt(s)", reply.ticket, reply.attempts);
            }
        }
        LuaCommand::Read { keys } => {
            let keys: Vec<Bytes> = keys.into_iter().map(Bytes::from).collect();
            let reply = client
                .read(pb::ReadRequest { keys: keys.clone() })
                .await
                .map_err(|status| status.message().to_owned())?
                .into_inner();
            let entries: Vec<pb::KeyValue> = keys
                .into_iter()
                .zip(reply.values)
                .map(|(key, value)| pb::KeyValue { key, value })
                .collect();
            print_entries(&entries, json);
        }
    }
    Ok(())
}

fn agent_error(error: &pb::AgentError) -> String {
    let code = pb::AgentErrorCode::try_from(error.code)
        .map(|c| {
            c.as_str_name()
                .trim_start_matches("AGENT_ERROR_CODE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| error.code.to_string());
    format!("{} ({code})", error.message)
}

fn print_entries(entries: &[pb::KeyValue], json: bool) {
    if json {
        let object: serde_json::Map<String, serde_json::Value> = entries
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    serde_json::Value::String(format!("0x{}", to_hex(&kv.value))),
                )
            })
            .collect();
        println!("{}", serde_json::Value::Object(object));
        return;
    }
    for kv in entries {
        println!("{} = {}", display_key(&kv.key), display_key(&kv.value));
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    if !digits.len().is_multiple_of(2) {
        return Err(format!("--param-hex has an odd number of digits: {text}"));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&digits[i..i + 2], 16)
                .map_err(|_| format!("--param-hex is not hex: {text}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_hex;

    #[test]
    fn hex_params_parse_with_or_without_prefix() {
        assert_eq!(parse_hex("0x00ff10"), Ok(vec![0, 255, 16]));
        assert_eq!(parse_hex("abCD"), Ok(vec![0xab, 0xcd]));
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
    }
}

//! Shell completions for `muster`: `muster completions bash|zsh` writes a
//! script generated from [`COMMANDS`], the table of every command and its
//! options. A test checks the table against each command's `--help`, and
//! the scripts in `contrib/completions/` against what this writes.

/// What an option takes after it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    Nothing,
    /// Any word (a number, an id, an address).
    Word,
    File,
    /// One of these words.
    OneOf(&'static str),
}

pub struct Opt {
    pub name: &'static str,
    pub takes: Takes,
}

pub struct Command {
    /// `workers`, or a command and its subcommand: `task submit`.
    pub path: &'static str,
    pub about: &'static str,
    pub opts: &'static [Opt],
}

const STATUSES: &str = "created idle working error inactive terminated active";
const TASK_STATES: &str =
    "waiting scheduled queued assigned running succeeded failed cancelled timed_out dead";

const fn flag(name: &'static str) -> Opt {
    Opt {
        name,
        takes: Takes::Nothing,
    }
}

const fn word(name: &'static str) -> Opt {
    Opt {
        name,
        takes: Takes::Word,
    }
}

const fn file(name: &'static str) -> Opt {
    Opt {
        name,
        takes: Takes::File,
    }
}

const fn one_of(name: &'static str, words: &'static str) -> Opt {
    Opt {
        name,
        takes: Takes::OneOf(words),
    }
}

/// The filter of a bulk `muster tasks` action.
const TASK_FILTER: &[Opt] = &[
    one_of("--state", TASK_STATES),
    word("--type"),
    word("--worker"),
    word("--label"),
    word("--q"),
    word("--created-after"),
    word("--created-before"),
    word("--finished-after"),
    word("--finished-before"),
    file("--token-file"),
];

/// Every command, with the options its `--help` names (`--help` itself
/// and the global `--url` aside).
pub const COMMANDS: &[Command] = &[
    Command {
        path: "workers",
        about: "list workers as a table",
        opts: &[
            one_of("--status", STATUSES),
            word("--label"),
            flag("--wide"),
            flag("--no-headers"),
            flag("--json"),
        ],
    },
    Command {
        path: "status",
        about: "everything known about one worker",
        opts: &[flag("--json")],
    },
    Command {
        path: "health",
        about: "the daemon's health and the fleet's; exits 3 when degraded",
        opts: &[flag("--fleet"), flag("--json")],
    },
    Command {
        path: "alerts",
        about: "built-in alerts firing; exits 3 if any",
        opts: &[flag("--all"), flag("--no-headers"), flag("--json")],
    },
    Command {
        path: "watch",
        about: "live view over WebSocket",
        opts: &[one_of("--status", STATUSES), flag("--wide")],
    },
    Command {
        path: "forget",
        about: "forget a worker",
        opts: &[file("--token-file")],
    },
    Command {
        path: "tasks",
        about: "list tasks",
        opts: &[
            one_of("--state", TASK_STATES),
            word("--type"),
            word("--worker"),
            word("--label"),
            word("--q"),
            word("--created-after"),
            word("--created-before"),
            word("--finished-after"),
            word("--finished-before"),
            flag("--json"),
            file("--token-file"),
        ],
    },
    Command {
        path: "tasks cancel",
        about: "cancel every task a filter matches",
        opts: TASK_FILTER,
    },
    Command {
        path: "tasks retry",
        about: "a fresh cycle for every ended task a filter matches",
        opts: TASK_FILTER,
    },
    Command {
        path: "tasks delete",
        about: "delete every ended task a filter matches",
        opts: TASK_FILTER,
    },
    Command {
        path: "task submit",
        about: "submit a task",
        opts: &[
            word("--payload"),
            word("--priority"),
            word("--worker"),
            word("--label"),
            word("--max-attempts"),
            word("--timeout-ms"),
            word("--delay-ms"),
            word("--run-at"),
            word("--depends-on"),
            word("--unique-key"),
            flag("--wait"),
            file("--token-file"),
        ],
    },
    Command {
        path: "task show",
        about: "one task",
        opts: &[flag("--json")],
    },
    Command {
        path: "task logs",
        about: "a task's log",
        opts: &[flag("-f")],
    },
    Command {
        path: "task cancel",
        about: "cancel a task",
        opts: &[file("--token-file")],
    },
    Command {
        path: "task retry",
        about: "a fresh cycle for an ended task",
        opts: &[file("--token-file")],
    },
    Command {
        path: "queues",
        about: "task types queued or paused",
        opts: &[flag("--json")],
    },
    Command {
        path: "schedule add",
        about: "a periodic task",
        opts: &[
            word("--timezone"),
            word("--payload"),
            word("--priority"),
            one_of("--overlap", "skip allow cancel"),
            one_of("--catch-up", "skip once"),
            flag("--paused"),
            file("--token-file"),
        ],
    },
    Command {
        path: "schedule ls",
        about: "the schedules",
        opts: &[flag("--json")],
    },
    Command {
        path: "schedule rm",
        about: "delete a schedule",
        opts: &[file("--token-file")],
    },
    Command {
        path: "schedule pause",
        about: "stop a schedule's ticks",
        opts: &[file("--token-file")],
    },
    Command {
        path: "schedule resume",
        about: "start a paused schedule's ticks again",
        opts: &[file("--token-file")],
    },
    Command {
        path: "queue pause",
        about: "stop dispatching a task type",
        opts: &[file("--token-file")],
    },
    Command {
        path: "queue resume",
        about: "dispatch a paused task type again",
        opts: &[file("--token-file")],
    },
    Command {
        path: "scale",
        about: "resize the pool",
        opts: &[file("--token-file")],
    },
    Command {
        path: "nodes",
        about: "the cluster's nodes",
        opts: &[flag("--no-headers"), flag("--json")],
    },
    Command {
        path: "pool",
        about: "the pool's members",
        opts: &[flag("--json")],
    },
    Command {
        path: "beat",
        about: "send one heartbeat",
        opts: &[
            word("--id"),
            one_of("--status", "idle working error"),
            word("--cpu"),
            word("--mem"),
            word("--queue"),
            flag("--tcp"),
            flag("--bye"),
            word("--heartbeat-addr"),
            file("--heartbeat-token-file"),
            flag("--tls"),
            file("--ca-file"),
            file("--cert-file"),
            file("--key-file"),
        ],
    },
    Command {
        path: "agent",
        about: "run a command as a monitored worker",
        opts: &[
            word("--id"),
            word("--interval"),
            word("--every"),
            word("--pid"),
            word("--label"),
            flag("--tcp"),
            flag("--udp"),
            flag("--tasks"),
            word("--capacity"),
            word("--task-type"),
            word("--heartbeat-addr"),
            file("--heartbeat-token-file"),
            flag("--tls"),
            file("--ca-file"),
            file("--cert-file"),
            file("--key-file"),
        ],
    },
    Command {
        path: "token new",
        about: "a new API token and its api_tokens_file line",
        opts: &[],
    },
    Command {
        path: "completions",
        about: "a completion script for bash or zsh",
        opts: &[],
    },
];

/// The first words: commands, and the global option.
fn top_words() -> Vec<&'static str> {
    let mut out = vec!["--url", "--ca-file"];
    for c in COMMANDS {
        let first = c.path.split(' ').next().unwrap_or(c.path);
        if !out.contains(&first) {
            out.push(first);
        }
    }
    out.extend(["help", "version"]);
    out
}

/// The subcommands of `first` (`task` → submit show logs cancel).
fn subcommands(first: &str) -> Vec<&'static str> {
    COMMANDS
        .iter()
        .filter_map(|c| c.path.strip_prefix(first)?.strip_prefix(' '))
        .collect()
}

pub fn bash() -> String {
    let mut s = String::from(
        "# bash completion for muster; generated by `muster completions bash`.\n\
         # Install as /usr/share/bash-completion/completions/muster.\n\
         _muster() {\n\
         \x20   local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n\
         \x20   local path=\"\" i w\n\
         \x20   for ((i = 1; i < COMP_CWORD; i++)); do\n\
         \x20       w=\"${COMP_WORDS[i]}\"\n\
         \x20       case \"$w\" in\n\
         \x20           --url) ((i++)) ;;\n\
         \x20           -*) ;;\n\
         \x20           *) if [ -z \"$path\" ]; then path=\"$w\"\n\
         \x20              elif [ \"$path\" = task ]; then path=\"$path $w\"; break\n\
         \x20              else break; fi ;;\n\
         \x20       esac\n\
         \x20   done\n\
         \x20   case \"$path:$prev\" in\n",
    );
    for c in COMMANDS {
        for o in c.opts {
            let reply = match o.takes {
                Takes::Nothing => continue,
                Takes::Word => "COMPREPLY=()".to_string(),
                Takes::File => "COMPREPLY=($(compgen -f -- \"$cur\"))".to_string(),
                Takes::OneOf(words) => format!("COMPREPLY=($(compgen -W \"{words}\" -- \"$cur\"))"),
            };
            s.push_str(&format!(
                "        \"{}:{}\") {reply}; return ;;\n",
                c.path, o.name
            ));
        }
    }
    s.push_str("        *:--url) COMPREPLY=(); return ;;\n    esac\n    case \"$path\" in\n");
    s.push_str(&format!(
        "        \"\") COMPREPLY=($(compgen -W \"{}\" -- \"$cur\")) ;;\n",
        top_words().join(" ")
    ));
    let first = "task";
    s.push_str(&format!(
        "        {first}) COMPREPLY=($(compgen -W \"{}\" -- \"$cur\")) ;;\n",
        subcommands(first).join(" ")
    ));
    s.push_str("        completions) COMPREPLY=($(compgen -W \"bash zsh\" -- \"$cur\")) ;;\n");
    for c in COMMANDS.iter().filter(|c| !c.opts.is_empty()) {
        let names: Vec<&str> = c.opts.iter().map(|o| o.name).collect();
        s.push_str(&format!(
            "        \"{}\") COMPREPLY=($(compgen -W \"{} --help\" -- \"$cur\")) ;;\n",
            c.path,
            names.join(" ")
        ));
    }
    s.push_str("    esac\n}\ncomplete -F _muster muster\n");
    s
}

/// A zsh `_arguments` spec for one option.
fn zsh_spec(o: &Opt) -> String {
    match o.takes {
        Takes::Nothing => format!("'{}'", o.name),
        // Words may repeat (`--label a=1 --label b=2`).
        Takes::Word => format!("'*{}:value:'", o.name),
        Takes::File => format!("'{}:file:_files'", o.name),
        Takes::OneOf(words) => format!("'{}:value:({words})'", o.name),
    }
}

pub fn zsh() -> String {
    let mut s = String::from(
        "#compdef muster\n\
         # zsh completion for muster; generated by `muster completions zsh`.\n\
         # Install as _muster in a directory of $fpath\n\
         # (/usr/share/zsh/vendor-completions on Debian).\n\
         _muster() {\n\
         \x20 local -a words_left\n\
         \x20 local path_ w\n\
         \x20 for w in \"${(@)words[2,CURRENT-1]}\"; do\n\
         \x20   case $w in\n\
         \x20     -*) ;;\n\
         \x20     *) if [[ -z $path_ ]]; then path_=$w\n\
         \x20        elif [[ $path_ == task ]]; then path_=\"$path_ $w\"; break\n\
         \x20        else break; fi ;;\n\
         \x20   esac\n\
         \x20 done\n\
         \x20 case $path_ in\n",
    );
    let commands: Vec<&str> = top_words().into_iter().filter(|w| *w != "--url").collect();
    s.push_str(&format!(
        "    '') _arguments '--url:url:' '1:command:({})' ;;\n",
        commands.join(" ")
    ));
    let first = "task";
    s.push_str(&format!(
        "    {first}) _values 'subcommand' {} ;;\n",
        subcommands(first).join(" ")
    ));
    s.push_str("    completions) _values 'shell' bash zsh ;;\n");
    for c in COMMANDS.iter().filter(|c| !c.opts.is_empty()) {
        let specs: Vec<String> = c.opts.iter().map(zsh_spec).collect();
        s.push_str(&format!(
            "    '{}') _arguments {} '*:argument:_files' ;;\n",
            c.path,
            specs.join(" ")
        ));
    }
    s.push_str("  esac\n}\n_muster \"$@\"\n");
    s
}

/// `muster completions bash|zsh`.
pub(crate) fn main(args: &[String]) -> super::Out {
    match args.first().map(String::as_str) {
        Some("bash") => print!("{}", bash()),
        Some("zsh") => print!("{}", zsh()),
        Some("-h" | "--help") => println!(
            "usage: muster completions bash|zsh\n\nWrites the completion script for that shell on stdout."
        ),
        _ => {
            return Err(super::Fail(2, "usage: muster completions bash|zsh".into()));
        }
    }
    Ok(())
}

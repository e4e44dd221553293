//! exectest: execve. A missing program is ENOENT and leaves this one
//! running; a forked child then runs execargs with two arguments (keeping
//! its pid and parent), and the parent reaps it with execargs's status.
//! Exits 0, or a distinct status for what went wrong.
#![no_std]
#![no_main]

use rt::{println, Status};

rt::entry!(main);

fn main(_: &rt::Startup) -> i32 {
    if rt::execve(b"/nothing-here\0", &[b"nothing-here\0"]) != rt::ENOENT {
        return 1;
    }
    let child = match rt::fork() {
        Ok(0) => {
            let e = rt::execve(b"/execargs\0", &[b"execargs\0", b"one\0", b"two\0"]);
            println!("exectest: execve failed: errno {e}");
            rt::exit(99)
        }
        Ok(pid) => pid,
        Err(_) => return 2,
    };
    match rt::waitpid(child as i64) {
        Ok((pid, Status::Exited(3))) if pid == child => {}
        other => {
            println!("exectest: child {child} ended as {other:?}");
            return 3;
        }
    }
    println!("exectest: the child ran execargs with its arguments");
    0
}

//! execargs: prints its arguments and its parent, then exits with how many
//! arguments it got (1 when it is its own program, argv[0]).
#![no_std]
#![no_main]

use rt::println;

rt::entry!(main);

fn main(start: &rt::Startup) -> i32 {
    let mut line = rt::Line::new();
    let _ = core::fmt::Write::write_fmt(
        &mut line,
        format_args!(
            "execargs: pid {} parent {}, {} argument(s):",
            rt::getpid(),
            rt::getppid(),
            start.argc()
        ),
    );
    for i in 0..start.argc() {
        let arg = start.arg(i).unwrap_or_default();
        let arg = core::str::from_utf8(arg).unwrap_or("?");
        let _ = core::fmt::Write::write_fmt(&mut line, format_args!(" {arg}"));
    }
    let _ = core::fmt::Write::write_str(&mut line, "\n");
    line.print();
    if start.arg(start.argc()).is_some() {
        println!("execargs: an argument past argc");
        return 100;
    }
    start.argc() as i32
}

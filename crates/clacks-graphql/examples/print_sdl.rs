//! Prints the served schema: `cargo run -p clacks-graphql --example print_sdl`.
fn main() {
    print!("{}", clacks_graphql::sdl());
}

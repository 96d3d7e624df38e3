fn main() {
    println!("portshift");
}

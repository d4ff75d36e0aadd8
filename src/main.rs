fn main() {
    println!("smartsolar: under construction");
}

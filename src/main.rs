fn main() {
    println!("apitap");
}
